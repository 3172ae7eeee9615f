"""The leaderboard's three figures, drawn with matplotlib's Agg canvas (no display, no pyplot
global state) and saved without a Software/date tag, so the same rows give the same PNG bytes.

- perplexity.png: mean token perplexity per model with its bootstrap 95% interval, measured and
  reported apart (the reference's Figure 3.3);
- entropy_vs_length.png: exp(word entropy) against length in words, per completion and for the
  true continuations (its Figure 3.4: repetitive output sits low for its length);
- semscore.png: the per-document SemScore distribution of each model.
"""

from __future__ import annotations

import io
import math

import numpy as np

from harness.ground.subtasks import GEN_TASK
from harness.runs.lmeval_outputs import Run

DPI = 110
MEASURED_COLOUR = "#1f5fa8"
REPORTED_COLOUR = "#8c8c8c"
TRUTH_COLOUR = "#111111"
_PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b",
            "#e377c2", "#bcbd22", "#7f7f7f"]


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    # No "Software" tag (it names the matplotlib version) and no timestamp: stable bytes.
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def perplexity_png(measured: list[dict], reported: list[dict]) -> bytes:
    rows = [r for r in measured + reported if _finite(r.get("ppl_token_mean"))]
    rows.sort(key=lambda r: (r["ppl_token_mean"], r["source"], r["model"]))
    fig = _figure(9.0, max(2.6, 0.32 * len(rows) + 1.4))
    ax = fig.add_subplot(1, 1, 1)
    if not rows:
        ax.text(0.5, 0.5, "no perplexity yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return _png(fig)
    y = np.arange(len(rows))[::-1]
    for pos, row in zip(y, rows):
        mean = row["ppl_token_mean"]
        if row["source"] == "measured":
            low, high = row.get("ppl_token_ci_low"), row.get("ppl_token_ci_high")
            err = [[mean - low], [high - mean]] if _finite(low) and _finite(high) else None
            ax.errorbar(mean, pos, xerr=err, fmt="o", color=MEASURED_COLOUR, ecolor=MEASURED_COLOUR,
                        capsize=3, markersize=5)
        else:
            ax.plot(mean, pos, marker="s", linestyle="none", markerfacecolor="white",
                    markeredgecolor=REPORTED_COLOUR, markersize=5)
    ax.set_yticks(y)
    ax.set_yticklabels([f"{r['model']}{' (reported)' if r['source'] != 'measured' else ''}"
                        for r in rows], fontsize=7)
    for label, row in zip(ax.get_yticklabels(), rows):
        label.set_color(MEASURED_COLOUR if row["source"] == "measured" else REPORTED_COLOUR)
    ax.set_xlabel("token perplexity, arithmetic mean over abstracts (lower is better)")
    ax.grid(axis="x", alpha=0.3)
    handles = [
        ax.errorbar([], [], xerr=[], fmt="o", color=MEASURED_COLOUR, capsize=3,
                    label="measured (bootstrap 95% interval)"),
        ax.plot([], [], marker="s", linestyle="none", markerfacecolor="white",
                markeredgecolor=REPORTED_COLOUR, label="reported by the reference study")[0],
    ]
    # Above the axes: inside, it would hide the error bars of the lowest rows.
    ax.legend(handles=handles, fontsize=7, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=2,
              frameon=False)
    fig.tight_layout()
    return _png(fig)


def _gen_runs(runs: list[Run], labels: dict[str, str]) -> list[tuple[str, Run]]:
    chosen = [(labels[r.run_id], r) for r in runs if r.samples.get(GEN_TASK)]
    return sorted(chosen, key=lambda item: item[0])


def _truths(runs: list[Run]) -> dict[str, str]:
    """Each document's true continuation, once per arXiv id (or doc id) over all runs."""
    truths = {}
    for run in runs:
        for doc in run.samples.get(GEN_TASK, []):
            key = doc.arxiv_id or f"doc{doc.doc_id}"
            if doc.truth and key not in truths:
                truths[key] = doc.truth
    return dict(sorted(truths.items()))


def entropy_length_png(runs: list[Run], labels: dict[str, str]) -> bytes:
    from harness.evaluate import metrics

    fig = _figure(8.0, 5.2)
    ax = fig.add_subplot(1, 1, 1)
    gen_runs = _gen_runs(runs, labels)
    if not gen_runs:
        ax.text(0.5, 0.5, "no measured completions yet", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_axis_off()
        return _png(fig)
    truths = list(_truths(runs).values())
    if truths:
        ax.scatter([metrics.completion_words(t) for t in truths],
                   [metrics.word_entropy(t) for t in truths],
                   marker="x", color=TRUTH_COLOUR, s=22, label="true continuation", zorder=3)
    for index, (label, run) in enumerate(gen_runs):
        docs = run.samples[GEN_TASK]
        ax.scatter([d.metrics["completion_words"] for d in docs],
                   [d.metrics["word_entropy"] for d in docs],
                   color=_PALETTE[index % len(_PALETTE)], s=16, alpha=0.75, label=label)
    ax.set_xlabel("length (words)")
    ax.set_ylabel("exp(word entropy)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title("Word entropy against length: repetitive text sits low", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def semscore_png(runs: list[Run], labels: dict[str, str]) -> bytes:
    gen_runs = _gen_runs(runs, labels)
    fig = _figure(9.0, max(2.6, 0.45 * len(gen_runs) + 1.4))
    ax = fig.add_subplot(1, 1, 1)
    if not gen_runs:
        ax.text(0.5, 0.5, "no measured completions yet", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_axis_off()
        return _png(fig)
    data = [[d.metrics["semscore"] for d in run.samples[GEN_TASK]] for _, run in gen_runs]
    positions = np.arange(len(gen_runs))[::-1] + 1
    ax.boxplot(data, positions=positions, orientation="horizontal", widths=0.5,
               showfliers=False, medianprops={"color": MEASURED_COLOUR})
    jitter = np.random.default_rng(0)  # fixed seed: the same figure on every regeneration
    for pos, values in zip(positions, data):
        ax.scatter(values, pos + jitter.uniform(-0.15, 0.15, len(values)), s=10,
                   color=MEASURED_COLOUR, alpha=0.6, zorder=3)
    ax.set_yticks(positions)
    ax.set_yticklabels([label for label, _ in gen_runs], fontsize=7)
    ax.set_xlabel("SemScore: cosine similarity of completion and true continuation")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("SemScore per document", fontsize=10)
    fig.tight_layout()
    return _png(fig)
