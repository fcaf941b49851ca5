"""Figures: metrics against ρ on a log axis (the paper's Figures 2 and 3) and the comparison's
accuracy, traffic and model-size plots (``fairsynth compare``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from common import comm  # noqa: E402


def panels(measure: str) -> list[tuple[str, str]]:
    """(key, title) of each panel; the covariance and correlation are the measure's own."""
    suffix = "" if measure == "sp" else "_eo"
    gap = ("spd", "|SPD|") if measure == "sp" else ("eod", "|EOD|")
    return [("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"),
            (f"cov{suffix}", f"covariance ({measure.upper()})"),
            (f"corr{suffix}", f"correlation ({measure.upper()})"), gap]


def plot_rho_sweep(summary: Sequence[dict], *, measure: str, path: Path,
                   curve_key: str | None = None, title: str = "", knob: str = "rho") -> Path:
    """One row of panels: accuracy, covariance, correlation and |SPD| (sp) or |EOD| (eo).

    ``summary`` holds per-ρ means (``rho`` 0 without a target is the real-data baseline,
    drawn dashed); with ``knob="target"`` the x axis is the fairness target τ instead, over the
    target points. ``curve_key`` splits the points into several curves (e.g. syn_1,
    syn_2(100%)).
    """
    shown = panels(measure)
    fig, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 3.4))
    rows = [r for r in summary if r.get("measure", measure) == measure]
    base = [r for r in rows if r["rho"] == 0 and not r.get("target")]
    curves: dict[str, list[dict]] = {}
    for r in rows:
        if r[knob] > 0 and (knob == "target" or not r.get("target")):
            name = str(r.get(curve_key, "syn_1")) if curve_key else "syn_1"
            curves.setdefault(name, []).append(r)
    for ax, (key, label) in zip(axes, shown):
        for name, pts in curves.items():
            pts = sorted(pts, key=lambda r: r[knob])
            ax.errorbar([p[knob] for p in pts], [p[key] for p in pts],
                        yerr=[p.get(key + "_std", 0.0) for p in pts], marker="o", capsize=3,
                        label=name)
        if base:
            ax.axhline(base[0][key], color="k", linestyle="--", linewidth=1, label="real data")
        ax.set_xscale("log" if knob == "rho" else "linear")
        ax.set_xlabel("ρ" if knob == "rho" else "target τ")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    against = "ρ" if knob == "rho" else "the target τ"
    fig.suptitle(title or f"{measure.upper()}: metrics against {against} (mean ± sd over seeds)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- compare


def _style(label: str) -> dict:
    """Colour by method (one-shot's order, DP-FedAvg, the baselines), a triangle for a budget
    other than ε = 1, a smaller release lighter."""
    colours = {"fedavg": "tab:blue", "fairfed": "tab:orange"}
    epsilon = label.split("ε=")[1].split()[0] if "ε=" in label else None
    marker = "o" if epsilon in (None, "1") else "^"
    if label.startswith("oneshot"):
        colour = "tab:purple" if " ptf" in label else "tab:green"
        return {"color": colour if label.endswith("100%") else "tab:olive", "marker": marker}
    if label.startswith("dp-fedavg"):
        return {"color": "tab:red", "marker": "s" if marker == "o" else "v"}
    return {"color": colours.get(label, "tab:gray"), "marker": "s"}


def plot_accuracy_vs_spd(summary: list[dict], records: list[dict], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for s in summary:
        if s["model"] != "logistic":
            continue
        st = _style(s["label"])
        pts = [r for r in records if r["label"] == s["label"] and r["model"] == "logistic"]
        ax.scatter([r["spd"] for r in pts], [100 * r["accuracy"] for r in pts], alpha=0.3,
                   s=14, color=st["color"])
        ax.errorbar(s["spd"], 100 * s["accuracy"], xerr=s["spd_std"],
                    yerr=100 * s["accuracy_std"], label=s["label"], capsize=3, **st)
    ax.set_xlabel("|SPD| (pooled test rows)")
    ax.set_ylabel("accuracy %")
    ax.set_title("accuracy against |SPD| (mean ± sd; seeds faint)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_utility_vs_clients(summary: list[dict], path: Path) -> Path:
    """Balanced accuracy and |SPD| against the number of clients K, one line per run (logistic
    model, mean ± sd over seeds)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    labels = sorted({s["label"] for s in summary if s["model"] == "logistic"})
    for label in labels:
        rows = sorted((s for s in summary if s["label"] == label and s["model"] == "logistic"),
                      key=lambda s: s["K"])
        st = _style(label)
        K = [s["K"] for s in rows]
        for ax, key in zip(axes, ("balanced_accuracy", "spd")):
            ax.errorbar(K, [s[key] for s in rows], yerr=[s[key + "_std"] for s in rows],
                        label=label, capsize=3, **st)
    ks = sorted({s["K"] for s in summary})
    for ax, name in zip(axes, ("balanced accuracy", "|SPD|")):
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_xlabel("clients K")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0].axhline(0.5, color="black", linewidth=0.8, linestyle=":")
    axes[0].set_title("balanced accuracy (0.5: a constant model)")
    axes[1].set_title("|SPD| (pooled test rows)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_bytes_vs_rounds(records: list[dict], path: Path) -> Path:
    """Cumulative bytes (both directions) after each exchange, first seed of each run."""
    fig, ax = plt.subplots(figsize=(6, 4.2))
    seen = set()
    for r in records:
        key = (r["label"], r["model"])
        if key in seen:
            continue
        seen.add(key)
        total = np.cumsum([e["bytes_up"] + e["bytes_down"] for e in r["exchanges"]])
        st = _style(r["label"])
        ax.plot(np.arange(1, len(total) + 1), total,
                linestyle="-" if r["model"] == "logistic" else "--", color=st["color"],
                marker=st["marker"], markersize=4,
                label=f"{r['label']} ({r['model']}, d = {r['params']:,})")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_yscale("log")
    ax.set_xlabel("exchange (server ↔ all clients), final evaluation included")
    ax.set_ylabel("cumulative bytes, both directions")
    ax.set_title("measured traffic against rounds")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_bytes_vs_model_size(records: list[dict], crossovers: list[dict], path: Path, *,
                             rounds: int) -> Path:
    """Measured total bytes against ``d``, the formula lines and the crossover ``d*``."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    d_values = np.logspace(0.5, 6.5, 200)
    fedavg = [r for r in records if r["strategy"] == "fedavg"]
    if fedavg:
        k = fedavg[0]["clients"]
        ax.plot(d_values, comm.BYTES_PER_NUMBER * comm.fedavg_numbers(clients=k, rounds=rounds,
                                                                      params=1) * d_values,
                color="tab:blue", linewidth=1, label=f"formula FedAvg: 8·2KRd (R = {rounds})")
    for c in crossovers:
        rs = [r for r in records if r["label"] == c["label"]]
        k = rs[0]["clients"]
        line = comm.BYTES_PER_NUMBER * k * (c["rows_per_client"] * c["columns"] + d_values)
        st = _style(c["label"])
        ax.plot(d_values, line, color=st["color"], linewidth=1,
                label=f"formula {c['label']}: 8·K(Ñ₂q + d)")
        ax.axvline(c["d_star"], color=st["color"], linestyle=":", linewidth=1)
        ax.text(c["d_star"] * 1.1, 0.03, f"d* ≈ {c['d_star']:,.0f} ({c['label']})",
                transform=ax.get_xaxis_transform(), rotation=90, fontsize=7,
                color=st["color"], va="bottom")
    for label in sorted({r["label"] for r in records}):
        pts = [r for r in records if r["label"] == label]
        st = _style(label)
        ax.scatter([r["params"] for r in pts], [r["bytes_total"] for r in pts], zorder=3,
                   edgecolor="k", linewidth=0.5, label=f"measured {label}", **st)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("model parameters d (logistic: 12, MLP: 107,201 on Law School)")
    ax.set_ylabel("total bytes, both directions")
    ax.set_title("bytes against model size: one-shot wins right of d*")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6.5, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_frontier(points: Sequence[dict], references: Sequence[dict], *, gap: str,
                  path: Path, title: str) -> Path:
    """Accuracy and balanced accuracy against |gap|: the pipeline's curves (one per label, ρ
    along each) beside the central references (means over seeds)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    markers = {"constant": "x", "unconstrained": "*", "exponentiated-gradient": "s",
               "threshold-optimizer": "D"}
    for ax, key, label in zip(axes, ("accuracy", "balanced_accuracy"),
                              ("accuracy", "balanced accuracy")):
        for method, marker in markers.items():
            refs = sorted((r for r in references if r["method"] == method),
                          key=lambda r: r[gap])
            if refs:
                ax.plot([r[gap] for r in refs], [r[key] for r in refs], marker=marker,
                        linestyle=":" if len(refs) > 1 else "", color="k", alpha=0.7,
                        label=f"central: {method}")
        curves: dict[str, list[dict]] = {}
        for p in points:
            curves.setdefault(p["curve"], []).append(p)
        for name, pts in curves.items():
            pts = sorted(pts, key=lambda p: p[gap])
            ax.plot([p[gap] for p in pts], [p[key] for p in pts], marker="o", label=name)
        ax.set_xlabel(f"|{gap.upper()}|")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
