"""Build the admin-key shim (`admin_key_shim.c`, an LD_PRELOAD library) that keeps the admin key off
tritonserver's command line; why it exists and how it works is said at the top of the C file.

`make serve-deps` builds it (through `python -m backend.server.tritonserver layout`), and so does every
`layout()` when the source is newer than the library; the Dockerfile compiles the same file itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).with_name("admin_key_shim.c")
LIBRARY = "libdllm_admin_key.so"
# What the launcher tells a user whose machine cannot build it.
NO_COMPILER = ("no C compiler (gcc or cc) to build the admin-key shim, which keeps the admin key off "
               "tritonserver's command line (readable by every local user); install one "
               "(apt-get install gcc) and rerun `make serve-deps`")


class ShimBuildError(RuntimeError):
    pass


def compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")


def build(dest_dir: Path) -> Path | None:
    """The shim in `dest_dir`, compiled now if missing or older than its source; None when there is no
    C compiler. A compiler that fails raises ShimBuildError with its message."""
    out = Path(dest_dir) / LIBRARY
    if out.is_file() and out.stat().st_mtime >= SOURCE.stat().st_mtime:
        return out
    cc = compiler()
    if cc is None:
        return None
    # A private name, then a rename: concurrent launchers (test sessions) never load a half-written file.
    tmp = out.with_name(f".{LIBRARY}.{os.getpid()}")
    proc = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(tmp),
                           str(SOURCE), "-ldl"], capture_output=True, text=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise ShimBuildError(f"{cc} could not build {SOURCE.name}:\n{proc.stderr.strip()}")
    os.replace(tmp, out)
    return out


def is_elf(path: Path) -> bool:
    """Whether `path` is a binary (not a script). The shim must be preloaded into tritonserver itself:
    in a wrapper script it would fill the key into the arguments the script passes on, where
    /proc/<pid>/cmdline of the real server shows it."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False
