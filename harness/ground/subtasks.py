"""The hepth_completion subtasks as the rest of the harness sees them: one home for their names,
metrics, directions, fresh twins and folder names.

The lm-eval task YAMLs in tasks/hepth_completion are what lm-eval runs; this module states the
same facts for the code that reads lm-eval's outputs (`feyntune eval`'s summary, the
leaderboard, the review page). tests/test_subtasks.py checks the two agree, so a metric added to
a YAML and not here (or the reverse) fails the suite.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TASK_DIR = Path(__file__).resolve().parents[2] / "tasks" / "hepth_completion"
GROUP = "hepth_completion"
FRESH_GROUP = "hepth_completion_fresh"
# Where `feyntune data build --fresh-after` writes the fresh test split, inside its output folder.
FRESH_DIR = "hepth-fresh"
# Where the leaderboard and the rating files go, and where `feyntune eval` writes when no
# --output_path is given (and the leaderboard, review and judge read).
RESULTS_DIR = "results"
RUNS_DIR = f"{RESULTS_DIR}/runs"

GEN_TASK = "hepth_completion_gen"
PPL_TASK = "hepth_completion_ppl"
FRESH_GEN_TASK = "hepth_completion_fresh_gen"
FRESH_PPL_TASK = "hepth_completion_fresh_ppl"


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool
    # True: every sample carries the value and lm-eval averages it ("aggregation: mean"); False:
    # a corpus-level aggregate only (the sample holds lm-eval's intermediate pair, not a value).
    per_document: bool = True


@dataclass(frozen=True)
class Subtask:
    name: str
    output_type: str              # lm-eval's: "generate_until" or "loglikelihood"
    metrics: tuple[Metric, ...]   # in the order of the YAML's metric_list
    standard: str | None = None   # a fresh subtask: the standard subtask it mirrors


_GEN_METRICS = (
    Metric("semscore", True),
    Metric("semscore_full", True),
    Metric("word_entropy", True),
    Metric("completion_words", True),
    Metric("metadata_leak", False),
    Metric("repetition", False),
)
_PPL_METRICS = (
    Metric("ppl_token", False),
    Metric("ppl_word", False),
    Metric("word_perplexity", False, per_document=False),
    Metric("byte_perplexity", False, per_document=False),
    Metric("bits_per_byte", False, per_document=False),
)

# Each fresh subtask measures what its standard twin measures, on newer documents.
SUBTASKS: dict[str, Subtask] = {s.name: s for s in (
    Subtask(GEN_TASK, "generate_until", _GEN_METRICS),
    Subtask(PPL_TASK, "loglikelihood", _PPL_METRICS),
    Subtask(FRESH_GEN_TASK, "generate_until", _GEN_METRICS, standard=GEN_TASK),
    Subtask(FRESH_PPL_TASK, "loglikelihood", _PPL_METRICS, standard=PPL_TASK),
)}
TASKS = tuple(SUBTASKS)
GEN_TASKS = tuple(name for name, s in SUBTASKS.items() if s.output_type == "generate_until")
FRESH_PAIRS = {name: s.standard for name, s in SUBTASKS.items() if s.standard}
GROUPS = {GROUP: (GEN_TASK, PPL_TASK), FRESH_GROUP: (FRESH_GEN_TASK, FRESH_PPL_TASK)}


def per_document_metrics(task: str) -> tuple[str, ...]:
    """The metrics every sample of `task` carries, in the YAML's order."""
    return tuple(m.name for m in SUBTASKS[task].metrics if m.per_document)
