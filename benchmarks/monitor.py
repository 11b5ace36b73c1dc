"""What machine a result came from, and what a run used: peak memory (process RSS on CPU, the CUDA
allocator's peak on GPU) and GPU utilization, sampled by a light background thread."""

from __future__ import annotations

import os
import platform
import re
import resource
import shutil
import socket
import subprocess
import threading
import time

import torch

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown cpu"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine_info(device: torch.device) -> dict:
    info = {"hostname": socket.gethostname(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "cpu": _cpu_model(), "cores": _cores(),
            "torch_threads": torch.get_num_threads(), "device": device.type}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda)
    return info


def machine_tag(info: dict) -> str:
    """A short file-name-safe name: the GPU model on CUDA, else core count and CPU model."""
    if info.get("gpu"):
        name = info["gpu"].replace("NVIDIA", "")
    else:
        cpu = re.sub(r"\(R\)|\(TM\)|CPU|@.*|Processor", " ", info.get("cpu", "cpu"))
        name = f"cpu{info.get('cores', '')}-{' '.join(cpu.split()[:3])}"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except OSError:  # not Linux: the lifetime peak is the best we have
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _gpu_util_reader(device: torch.device):
    """A callable returning the GPU's utilization in percent, or None when nothing can read it."""
    if device.type != "cuda":
        return None
    try:
        torch.cuda.utilization(device)  # needs pynvml
        return lambda: float(torch.cuda.utilization(device))
    except Exception:
        pass
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()

    def read():
        out = subprocess.run([smi, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", f"-i={index}"],
                             capture_output=True, text=True, timeout=5)
        return float(out.stdout.strip().splitlines()[0])
    try:
        read()
        return read
    except Exception:
        return None


class ResourceMonitor:
    """Samples RSS every `interval` s and GPU utilization every `gpu_interval` s while a run goes on."""

    def __init__(self, device: torch.device, interval: float = 0.05, gpu_interval: float = 0.5):
        self.device = device
        self.interval, self.gpu_interval = interval, gpu_interval
        self._gpu = _gpu_util_reader(device)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.peak_rss = 0
        self.gpu_samples: list[float] = []

    def __enter__(self) -> ResourceMonitor:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self.peak_rss = _rss_bytes()
        self._thread = threading.Thread(target=self._loop, name="bench-monitor", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _loop(self) -> None:
        next_gpu = 0.0
        while not self._stop.wait(self.interval):
            self.peak_rss = max(self.peak_rss, _rss_bytes())
            now = time.monotonic()
            if self._gpu is not None and now >= next_gpu:
                next_gpu = now + self.gpu_interval
                try:
                    self.gpu_samples.append(self._gpu())
                except Exception:
                    self._gpu = None

    def result(self) -> dict:
        out = {"peak_rss_mib": round(max(self.peak_rss, _rss_bytes()) / 2**20, 1)}
        if self.device.type == "cuda":
            out["cuda_max_allocated_mib"] = round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
        if self.gpu_samples:
            out["gpu_util_mean_pct"] = round(sum(self.gpu_samples) / len(self.gpu_samples), 1)
            out["gpu_util_max_pct"] = max(self.gpu_samples)
        return out
