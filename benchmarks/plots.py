"""PNG plots of benchmark results (matplotlib, headless): latency CDFs of one workload across
configurations, and throughput / p95 latency against the swept load (arrival rate or concurrency).
Plots are optional: without matplotlib (e.g. on a bare GPU machine) the caller gets None."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _cdf(values: list[float]) -> tuple[list[float], list[float]]:
    xs = sorted(values)
    return [xs[0], *xs], [0.0] + [(i + 1) / len(xs) for i in range(len(xs))]


def _log_if_wide(ax, axis: str) -> None:
    """A log scale when the data spans more than a factor of 10 (swept rates, fast vs slow configurations)."""
    lo, hi = ax.dataLim.intervalx if axis == "x" else ax.dataLim.intervaly
    if lo > 0 and hi / lo > 10:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")


def latency_cdf(results: list[dict], workload: str, path: Path, title: str = "") -> Path | None:
    plt = _pyplot()
    runs = [r for r in results if r["workload"] == workload]
    if plt is None or not runs:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for r in runs:
        ok = [q for q in r["requests"] if q.get("error") is None and q.get("finish") is not None]
        lat = [q["finish"] - q["arrival"] for q in ok]
        ttfd = [q["first_delta"] - q["arrival"] for q in ok if q.get("first_delta") is not None]
        for ax, vals in ((axes[0], lat), (axes[1], ttfd)):
            if vals:
                ax.step(*_cdf(vals), where="post", label=r["variant"])
    for ax, name in ((axes[0], "request latency"), (axes[1], "time to first delta")):
        _log_if_wide(ax, "x")
        ax.set_xlabel(f"{name} (s)")
        ax.set_ylabel("fraction of requests")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title or f"latency CDF, workload {workload}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def load_sweep(results: list[dict], path: Path, x_key: str = "rate", x_label: str = "arrival rate (requests/s)",
               title: str = "") -> Path | None:
    """Throughput and p95 latency against `x_key` for every (sweep, variant) with two points or more."""
    plt = _pyplot()
    lines: dict[str, list[tuple[float, float, float]]] = {}
    for r in results:
        x = r.get(x_key)
        s = r["summary"]
        if x is None or s["throughput_tok_s"] is None:
            continue
        label = r["variant"] if r.get("sweep") in (None, r["variant"]) else f"{r['sweep']} {r['variant']}"
        lines.setdefault(label, []).append((x, s["throughput_tok_s"], s["latency_s"]["p95"]))
    lines = {k: sorted(v) for k, v in lines.items() if len(v) >= 2}
    if plt is None or not lines:
        return None
    fig, (ax_t, ax_l) = plt.subplots(1, 2, figsize=(10, 4))
    for label, pts in lines.items():
        xs = [p[0] for p in pts]
        ax_t.plot(xs, [p[1] for p in pts], marker="o", label=label)
        ax_l.plot(xs, [p[2] for p in pts], marker="o", label=label)
    ax_t.set_ylabel("throughput (generated tokens/s)")
    ax_l.set_ylabel("p95 request latency (s)")
    for ax in (ax_t, ax_l):
        _log_if_wide(ax, "x")
        ax.set_xlabel(x_label)
        ax.grid(alpha=0.3)
    ax_t.legend(fontsize=8)
    fig.suptitle(title or f"throughput and p95 latency vs {x_label}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
