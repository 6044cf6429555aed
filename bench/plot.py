"""The bench's PNG: throughput of every contender per kind, and latency against load."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def plot(report: dict[str, Any], path: Path) -> None:
    kinds = list(report["kinds"])
    fig, axes = plt.subplots(2, len(kinds), figsize=(7 * len(kinds), 9), squeeze=False)
    for col, kind in enumerate(kinds):
        k = report["kinds"][kind]
        per_s = k["throughput"]["per_s"]
        names = list(per_s)
        medians = [statistics.median(v) for v in per_s.values()]
        low = [m - min(v) for m, v in zip(medians, per_s.values(), strict=True)]
        high = [max(v) - m for m, v in zip(medians, per_s.values(), strict=True)]
        ax = axes[0][col]
        ax.barh(names, medians, xerr=[low, high], color="tab:blue")
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel(f"{kind}s per second (median, min-max)")
        ax.set_title(f"{kind}: throughput")
        ax = axes[1][col]
        for batching, style in (("adaptive", "o-"), ("fixed", "s--")):
            rows = [r for r in k.get("latency", []) if r["batching"] == batching]
            if rows:
                loads = [r["load"] for r in rows]
                ax.plot(loads, [r["stages_ms"]["end_to_end"]["p99"] for r in rows], style, label=f"{batching} p99")
                ax.plot(loads, [r["stages_ms"]["end_to_end"]["p50"] for r in rows], style, alpha=0.5,
                        label=f"{batching} p50")
        ax.set_yscale("log")
        ax.set_xlabel("offered load / a worker's measured capacity")
        ax.set_ylabel("end to end latency (ms)")
        ax.set_title(f"{kind}: latency against load")
        ax.legend()
    fig.suptitle(f"streaminfer bench on {report['machine']['cpus']} CPUs, torch {report['machine']['torch']}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
