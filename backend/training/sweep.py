"""Train several configurations side by side on one machine within a time budget, then score each.

    python -m backend.training.sweep --out DIR --minutes 7 \\
        --run "a=--lr 2e-3" --run "b=--lr 3e-3 --seed 1" [--device cuda]

A tiny model leaves a GPU mostly idle, so one process per configuration shares it. The step count
of every run is fixed before it starts (so its learning-rate schedule and curriculum are those of a
normal run, reproducible with `backend.training.train --steps N`): a short calibration at full task
lengths measures each configuration's steps per second under the same sharing, and the steps are
what fits the budget. Each run then gets a held-out evaluation (`backend.oracle.evaluate`), and the table
at the end names the best by mean accuracy with key-value lookup as the tie-breaker.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from backend.training.train import resolve_device

STARTUP_TIMEOUT_S = 300  # most a trainer may take to log its first step before calibration starts anyway
STEP_LINE = re.compile(r"^step (\d+)/.* elapsed ([\d.]+)s", re.MULTILINE)


def _launch(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-u", *args], stdout=log.open("w"), stderr=subprocess.STDOUT)


def _stop(procs) -> None:
    """SIGINT first: a trainer saves the checkpoint of its last finished step and exits."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()


def calibrate(runs: dict[str, list[str]], common: list[str], out: Path, seconds: float) -> dict[str, float]:
    """Steps per second of each run at full task lengths (no curriculum), all running at once, read
    from the step and elapsed time of the trainers' own log lines."""
    procs, logs = {}, {}
    for name, extra in runs.items():
        logs[name] = out / f"{name}.calibrate.log"
        procs[name] = _launch(["-m", "backend.training.train", *common, *extra, "--out", str(out / f"{name}.cal"),
                               "--steps", "1000000", "--ramp", "0", "--log-every", "5",
                               "--save-every", "100000000"], logs[name])
    # The clock starts when every run has logged its first step: start-up (imports, the first
    # compile) can take longer than the calibration itself on a busy machine.
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline and any(
            p.poll() is None and not (logs[n].is_file() and STEP_LINE.search(logs[n].read_text(errors="replace")))
            for n, p in procs.items()):
        time.sleep(0.5)
    time.sleep(seconds)
    _stop(procs.values())
    rates = {}
    for name, log in logs.items():
        shutil.rmtree(out / f"{name}.cal", ignore_errors=True)  # the checkpoint saved on SIGINT
        points = [(float(m.group(2)), int(m.group(1))) for m in STEP_LINE.finditer(log.read_text(errors="replace"))]
        points = points[len(points) // 3:]  # skip start-up and warm-up
        if len(points) < 2:
            print(f"{name}: too few steps in {seconds} s to calibrate, left out; its log ends:\n" + _tail(log),
                  flush=True)
            continue
        (t0, s0), (t1, s1) = points[0], points[-1]
        rates[name] = (s1 - s0) / (t1 - t0)
    if not rates:
        raise RuntimeError("no run could be calibrated")
    return rates


def _tail(log: Path, lines: int = 15) -> str:
    return "".join(log.read_text(errors="replace").splitlines(keepends=True)[-lines:])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--run", action="append", required=True, help="NAME=TRAIN-OPTIONS (of backend.training.train)")
    ap.add_argument("--common", default="", help="options given to every run")
    ap.add_argument("--minutes", type=float, required=True, help="training time budget (after calibration)")
    ap.add_argument("--calibrate-seconds", type=float, default=40)
    ap.add_argument("--margin", type=float, default=0.85, help="share of the calibrated steps to plan for")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--per-task", type=int, default=50, help="held-out examples per task in the evaluation")
    ap.add_argument("--pack", help="also write DIR/<run>.tar (checkpoint + eval.json) and DIR/logs.tar")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = {}
    for spec in args.run:
        name, _, opts = spec.partition("=")
        runs[name] = shlex.split(opts)
    common = ["--device", args.device, *shlex.split(args.common)]

    rates = calibrate(runs, common, out, args.calibrate_seconds)
    runs = {n: o for n, o in runs.items() if n in rates}
    plan = {n: max(100, int(r * args.minutes * 60 * args.margin) // 100 * 100) for n, r in rates.items()}
    for n in runs:
        print(f"{n}: {rates[n]:.2f} steps/s at full lengths -> {plan[n]} steps", flush=True)

    procs = {}
    for name, extra in runs.items():
        procs[name] = _launch(["-m", "backend.training.train", *common, *extra, "--out", str(out / name),
                               "--steps", str(plan[name]), "--save-every", str(max(100, plan[name] // 4))],
                              out / f"{name}.train.log")
    deadline = time.time() + args.minutes * 60 * 1.1
    while time.time() < deadline and any(p.poll() is None for p in procs.values()):
        time.sleep(1)
    late = [n for n, p in procs.items() if p.poll() is None]
    _stop(procs.values())
    for n in late:
        print(f"{n}: stopped at the deadline; the checkpoint it saved then is scored", flush=True)
    for n, p in procs.items():
        if n not in late and p.returncode != 0:
            print(f"{n}: training failed (exit {p.returncode}); its log ends:\n{_tail(out / f'{n}.train.log')}")

    evals = {}
    for name in runs:
        if (out / name / "model.safetensors").is_file():
            evals[name] = _launch(["-m", "backend.oracle.evaluate", "--model", str(out / name), "--per-task",
                                   str(args.per_task), "--json", str(out / name / "eval.json"), "--device",
                                   str(resolve_device(args.device))],
                                  out / f"{name}.eval.log")
    for p in evals.values():
        p.wait()
    summary = {}
    for name in runs:
        state_file, eval_file = out / name / "training_state.json", out / name / "eval.json"
        state = json.loads(state_file.read_text()) if state_file.is_file() else {}
        rep = json.loads(eval_file.read_text()) if eval_file.is_file() else {}
        summary[name] = {"options": runs[name], "steps": state.get("step"), "minutes": state.get("minutes"),
                         "final_loss": state.get("final_loss"), "overall": rep.get("overall_accuracy"),
                         "tasks": {t: r["accuracy"] for t, r in rep.get("tasks", {}).items()}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{'run':<8}{'steps':>7}{'min':>6}{'loss':>8}{'overall':>9}  per task")
    for name, s in summary.items():
        per = " ".join(f"{t}={a:.0%}" for t, a in s["tasks"].items())
        overall = f"{s['overall']:.1%}" if s["overall"] is not None else "-"
        print(f"{name:<8}{s['steps'] or 0:>7}{s['minutes'] or 0:>6}{s['final_loss'] or 0:>8}{overall:>9}  {per}")
    scored = [n for n, s in summary.items() if s["overall"] is not None]
    if scored:
        best = max(scored, key=lambda n: (summary[n]["overall"], summary[n]["tasks"].get("kv", 0.0)))
        print(f"best: {best} ({out / best})")
    if args.pack:
        pack(out, list(summary), Path(args.pack))
    return summary


def pack(out: Path, names: list[str], dest: Path) -> None:
    """One tar per run directory and one of the logs: few files, for a machine that returns few."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (out / name).is_dir():
            with tarfile.open(dest / f"{name}.tar", "w") as tar:
                tar.add(out / name, arcname=name)
    with tarfile.open(dest / "logs.tar", "w") as tar:
        for f in sorted(out.glob("*.log")) + [out / "summary.json"]:
            tar.add(f, arcname=f.name)


if __name__ == "__main__":
    main()
