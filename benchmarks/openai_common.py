"""What the OpenAI-server benchmarks share: the bundled model's task prompts with the answers Triton gives
them straight over gRPC (the reference an answer through the OpenAI server must equal), the K/V gauges,
a `make serve-openai` of their own on free ports, and where results go (named after the machine)."""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from backend.server.network import free_ports

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


def task_prompts(count: int, seed: int = 0) -> list[str]:
    """Prompts in the bundled model's five task formats, short answers (a few tokens to a dozen)."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    out = []
    for i in range(count):
        word = "".join(rng.choice(letters) for _ in range(rng.randint(3, 8)))
        out.append([f"{rng.randint(10, 9999)}+{rng.randint(10, 9999)}=", f"sort {word} =", f"reverse {word} =",
                    f"copy {word} ="][i % 4])
    return out


async def reference_answers(triton_url: str, prompts: list[str]) -> dict[str, str]:
    """Each distinct prompt's answer straight from Triton's gRPC stream (what the OpenAI path must equal)."""
    from openai_server.triton import Triton, TritonRequest

    triton, answers = Triton(triton_url, "dllm"), {}
    try:
        for prompt in dict.fromkeys(prompts):
            answers[prompt] = "".join([a.text async for u in triton.generate(TritonRequest(prompt)) for a in u.answers])
    finally:
        await triton.close()
    return answers


def metrics(metrics_port: int) -> dict[str, float]:
    """The dllm: gauges and counters summed over their labels (one model instance here)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for name, labels, value in re.findall(r"^(dllm:[a-z_]+)(\{[^}]*\})?\s+(\S+)$", text, re.M):
        key = name + ("{abort}" if 'finish_reason="abort"' in labels else "")
        out[key] = out.get(key, 0.0) + float(value)
    return out


def machine() -> tuple[dict, str]:
    import torch

    from benchmarks.monitor import machine_info, machine_tag

    info = machine_info(torch.device("cpu"))
    return info, machine_tag(info)


def write(kind: str, doc: dict, out: Path = RESULTS) -> Path:
    info, tag = machine()
    doc = {"created": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": info, "machine_tag": tag, **doc}
    path = out / f"{time.strftime('%Y-%m-%d')}-{kind}-{tag}.json"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


@dataclass
class Servers:
    """Where the OpenAI server, Triton's gRPC and Triton's metrics listen."""
    base_url: str
    grpc_url: str
    metrics_port: int
    proc: subprocess.Popen | None = None

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(60)


def start_servers(log: Path, ready_timeout: float = 300.0) -> Servers:
    """`make serve-openai` on free ports (python -m openai_server.launch), its output in `log`."""
    port, http, grpc, metrics_port = free_ports(4)
    cmd = [sys.executable, "-m", "openai_server.launch", "--port", str(port), "--http-port", str(http),
           "--grpc-port", str(grpc), "--metrics-port", str(metrics_port)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=open(log, "w"), stderr=subprocess.STDOUT,  # noqa: SIM115
                            start_new_session=True)
    servers = Servers(f"http://127.0.0.1:{port}/v1", f"127.0.0.1:{grpc}", metrics_port, proc)
    end = time.monotonic() + ready_timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                if resp.status == 200:
                    return servers
        except (urllib.error.URLError, OSError):
            pass
        if proc.poll() is not None or time.monotonic() > end:
            servers.stop()
            raise RuntimeError(f"serve-openai did not come up (see {log})")
        time.sleep(0.5)
