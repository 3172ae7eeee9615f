"""What tables, the review page and the demo call each run."""

from __future__ import annotations

from harness.runs.lmeval_outputs import Run


def run_labels(runs: list[Run]) -> dict[str, str]:
    """Each run's model label; runs of one model are told apart by their date."""
    counts: dict[tuple, int] = {}
    for run in runs:
        counts[run.identity.key] = counts.get(run.identity.key, 0) + 1
    labels = {}
    for run in runs:
        label = run.identity.label
        if counts[run.identity.key] > 1:
            label = f"{label} ({run.date_label})"
        labels[run.run_id] = label
    # Two runs of one model started in the same second: fall back to the run path.
    seen: dict[str, int] = {}
    for label in labels.values():
        seen[label] = seen.get(label, 0) + 1
    return {rid: (f"{lab} [{rid}]" if seen[lab] > 1 else lab) for rid, lab in labels.items()}
