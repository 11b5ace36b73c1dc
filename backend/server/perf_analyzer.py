"""`<venv>/bin/perf_analyzer` as a script that finds the libraries of nvidia-pytriton (see tritonserver.py)."""

from __future__ import annotations

import os
from pathlib import Path


def wrap_perf_analyzer(files, real_dir: Path) -> Path | None:
    """Make `<venv>/bin/perf_analyzer` work as it is: the executable tritonclient installs there moves to
    `real_dir`, and a script that sets `LD_LIBRARY_PATH` takes its place (again after a reinstall)."""
    entry, real = files.venv_bin / "perf_analyzer", real_dir / "perf_analyzer"
    try:
        with open(entry, "rb") as f:
            if f.read(4) == b"\x7fELF":  # pip's copy: (re)installed since the last layout
                real_dir.mkdir(parents=True, exist_ok=True)
                os.replace(entry, real)
    except FileNotFoundError:  # not installed, or another layout() moved it just now
        pass
    if not real.is_file():
        return None
    libs = ":".join(str(p) for p in files.lib_dirs)
    script = ("#!/bin/sh\n# Written by backend/server/tritonserver.py: Perf Analyzer needs the libraries of "
              "nvidia-pytriton.\n"
              f'export LD_LIBRARY_PATH="{libs}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}"\nexec "{real}" "$@"\n')
    if not (entry.is_file() and entry.read_text() == script):
        tmp = entry.with_name(f".perf_analyzer.{os.getpid()}")
        tmp.write_text(script)
        tmp.chmod(0o755)
        os.replace(tmp, entry)
    return entry
