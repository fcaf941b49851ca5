"""Figures in the style of the paper's Figures 2 and 3: metrics against ρ on a log axis."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

def panels(measure: str) -> list[tuple[str, str]]:
    """(key, title) of each panel; the covariance and correlation are the measure's own."""
    suffix = "" if measure == "sp" else "_eo"
    gap = ("spd", "|SPD|") if measure == "sp" else ("eod", "|EOD|")
    return [("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"),
            (f"cov{suffix}", f"covariance ({measure.upper()})"),
            (f"corr{suffix}", f"correlation ({measure.upper()})"), gap]


def plot_rho_sweep(summary: Sequence[dict], *, measure: str, path: Path,
                   curve_key: str | None = None, title: str = "") -> Path:
    """One row of panels: accuracy, covariance, correlation and |SPD| (sp) or |EOD| (eo).

    ``summary`` holds per-ρ means (``rho`` 0 is the real-data baseline, drawn dashed).
    ``curve_key`` splits the points into several curves (e.g. syn_1, syn_2(100%)).
    """
    shown = panels(measure)
    fig, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 3.4))
    rows = [r for r in summary if r.get("measure", measure) == measure]
    base = [r for r in rows if r["rho"] == 0]
    curves: dict[str, list[dict]] = {}
    for r in rows:
        if r["rho"] > 0:
            curves.setdefault(str(r.get(curve_key, "syn_1")) if curve_key else "syn_1", []).append(r)
    for ax, (key, label) in zip(axes, shown):
        for name, pts in curves.items():
            pts = sorted(pts, key=lambda r: r["rho"])
            ax.errorbar([p["rho"] for p in pts], [p[key] for p in pts],
                        yerr=[p.get(key + "_std", 0.0) for p in pts], marker="o", capsize=3,
                        label=name)
        if base:
            ax.axhline(base[0][key], color="k", linestyle="--", linewidth=1, label="real data")
        ax.set_xscale("log")
        ax.set_xlabel("ρ")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title or f"{measure.upper()} penalty: metrics against ρ (mean ± sd over seeds)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
