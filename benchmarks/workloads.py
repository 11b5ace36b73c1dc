"""Benchmark workloads: request sets with length distributions and arrival times, seeded, saved as
JSONL so that any run can be replayed (in-process, or through Triton with Perf Analyzer).

A workload is described by a JSON-friendly spec:

    {"name": "burst",   "arrival": "burst",   "n": 32, "classes": [...]}           N requests at t=0
    {"name": "poisson", "arrival": "poisson", "n": 32, "rate": 2.0, "classes": [...]}
    {"name": "mixed",   "arrival": "poisson", "n": 48, "rate": 1.0,
     "classes": [{"kind": "short", "weight": 0.7, "prompt": [64, 256], "gen": [64, 256]},
                 {"kind": "long",  "weight": 0.3, "prompt": [1024, 2048], "gen": [128, 512]}]}
    {"name": "trace",   "arrival": "trace",   "path": "trace.jsonl"}               replay a file

Lengths are drawn uniformly in each class's inclusive range; generation lengths are rounded to a
multiple of `gen_multiple` (the block length), since `max_tokens` must be divisible by it.
A trace line needs an arrival time and lengths: `arrival` (s) or `timestamp` (ms), `prompt_len` or
`input_length`, `max_tokens` or `output_length`; a `text` (or `prompt_ids`) is used as given.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

ARRIVALS = ("burst", "poisson", "trace")
DEFAULT_CLASSES = [{"kind": "short", "weight": 1.0, "prompt": [16, 64], "gen": [32, 32]}]


@dataclass
class WorkItem:
    arrival: float  # seconds after the start of the run
    max_tokens: int
    kind: str = "short"
    text: str | None = None
    answer: str | None = None
    task: str | None = None
    prompt_len: int | None = None  # synthetic prompts: length and seed of the ids
    prompt_seed: int | None = None
    prompt_ids: list[int] | None = None  # explicit ids (from a trace)

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class Workload:
    name: str
    spec: dict
    items: list[WorkItem] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return max((i.arrival for i in self.items), default=0.0)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps({"_workload": self.spec})] + [json.dumps(i.to_json()) for i in self.items]
        path.write_text("\n".join(lines) + "\n")
        return path

    def intervals_us(self) -> list[int]:
        """Gaps between successive arrivals in microseconds (Perf Analyzer's --request-intervals).
        At least 1: Perf Analyzer 2.50 dies of a division by zero (SIGFPE) on a file of zero gaps."""
        times = sorted(i.arrival for i in self.items)
        return [max(1, round((b - a) * 1e6)) for a, b in zip([0.0, *times[:-1]], times, strict=True)]


def load(path: str | Path, source=None, gen_multiple: int = 1) -> Workload:
    """A saved workload (exactly as it was) or a foreign trace (prompts made by `source` to size)."""
    path = Path(path)
    spec, items = {"name": path.stem, "arrival": "trace", "path": str(path)}, []
    known = set(WorkItem.__dataclass_fields__)
    for n, line in enumerate(path.read_text().splitlines()):
        if not line.strip():
            continue
        row = json.loads(line)
        if "_workload" in row:
            spec = {**row["_workload"], "path": str(path)}
            continue
        if "arrival" in row and "max_tokens" in row and set(row) <= known:
            items.append(WorkItem(**row))
            continue
        items.append(_trace_item(row, n, source, gen_multiple, path))
    items.sort(key=lambda i: i.arrival)
    return Workload(spec.get("name", path.stem), spec, items)


def _trace_item(row: dict, n: int, source, gen_multiple: int, path: Path) -> WorkItem:
    try:
        arrival = float(row["arrival"]) if "arrival" in row else float(row["timestamp"]) / 1000.0
        gen = int(row.get("max_tokens", row.get("output_length")))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"trace: line {n + 1} of {path} needs an arrival (arrival s | timestamp ms) and "
                         f"max_tokens | output_length") from e
    gen = _round_up(gen, gen_multiple)
    if "text" in row or "prompt_ids" in row:
        return WorkItem(arrival, gen, row.get("kind", "short"), text=row.get("text"), answer=row.get("answer"),
                        prompt_ids=row.get("prompt_ids"))
    length = int(row.get("prompt_len", row.get("input_length", 0)))
    if length < 1 or source is None:
        raise ValueError(f"trace: line {n + 1} of {path} has no text and no prompt_len | input_length")
    kind = row.get("kind", "long" if length >= 64 else "short")
    return _item(arrival, gen, kind, source.make(kind, length, seed=n))


def _item(arrival: float, gen: int, kind: str, prompt) -> WorkItem:
    return WorkItem(arrival, gen, kind, text=prompt.text, answer=prompt.answer, task=prompt.task,
                    prompt_len=prompt.prompt_len, prompt_seed=prompt.prompt_seed)


def _round_up(n: int, multiple: int) -> int:
    return max(multiple, -(-int(n) // multiple) * multiple)


def arrivals(spec: dict, n: int, rng: random.Random) -> list[float]:
    kind = spec.get("arrival", "burst")
    if kind == "burst":
        return [0.0] * n
    if kind == "poisson":
        rate = float(spec["rate"])
        if rate <= 0:
            raise ValueError(f"rate: must be > 0 requests/s, got {rate}")
        t, out = 0.0, []
        for _ in range(n):
            out.append(t)  # the first request arrives at once; exponential gaps after it
            t += rng.expovariate(rate)
        return out
    raise ValueError(f"arrival: unknown arrival process {kind!r}; known: {ARRIVALS}")


def build(spec: dict, source, gen_multiple: int = 1) -> Workload:
    """The workload a spec describes. Same spec and seed, same workload, on any machine."""
    if spec.get("arrival") == "trace":
        wl = load(spec["path"], source, gen_multiple)
        wl.name = spec.get("name", wl.name)
        return wl
    seed = int(spec.get("seed", 0))
    # Two streams: the requests depend on the seed only, so a rate sweep replays the same requests
    # at every rate and only the arrival times change.
    rng = random.Random(f"requests:{seed}")
    n = int(spec["n"])
    classes = spec.get("classes") or DEFAULT_CLASSES
    weights = [float(c.get("weight", 1.0)) for c in classes]
    times = arrivals(spec, n, random.Random(f"arrivals:{seed}"))
    items = []
    for i, t in enumerate(times):
        c = rng.choices(classes, weights)[0]
        plen = rng.randint(*c["prompt"])
        gen = _round_up(rng.randint(*c["gen"]), gen_multiple)
        prompt = source.make(c.get("kind", "short"), plen, seed=seed * 1_000_003 + i)
        items.append(_item(t, gen, c.get("kind", "short"), prompt))
    return Workload(spec.get("name", spec.get("arrival", "workload")), dict(spec), items)


def with_rate(spec: dict, rate: float) -> dict:
    """The same workload at another Poisson rate (for a sweep); the name carries the rate."""
    return {**spec, "arrival": "poisson", "rate": rate, "name": f"{spec.get('name', 'poisson')}@{rate:g}"}
