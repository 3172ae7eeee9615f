"""results/judge_ratings.json: the human-ratings shape plus what makes judge scores
reproducible (judges, rubric version, seed, order) and every per-document score.

{"format": "feyntune-judge-ratings/1",
 "rubric": {"version": ..., "text": ...}, "seed": 42, "settings": {...},
 "judges": [{"judge": "openai:gpt-4o", "answers": .., "failed": .., "cost_all_answers": ..}],
 "models": [{"run", "model", "mean", "n", "raters", "documents", "criteria",
             "boot_std", "ci_low", "ci_high"}],
 "documents": [{"run", "model", "document", "judge", "scores": {...}}],
 "failed": [{"run", "model", "document", "judge", "reason"}],
 "order": [[run, document], ...],
 "between_judges": {...}, "agreement": {...}}
Only figures that depend on the inputs and the cached answers are stored (no times, no
counts of this run's requests), so a re-run writes the same bytes.
"""

from __future__ import annotations

import math
from pathlib import Path

from harness.ground.errors import FeynTuneError
from harness.ground.jsonl import read_json, write_json
from harness.ground.stats import bootstrap_mean
from harness.review.criteria import CRITERION_KEYS, OVERALL

FORMAT = "feyntune-judge-ratings/1"
DEFAULT_NAME = "judge_ratings.json"


def item_order(key: tuple) -> tuple:
    """Sort key for (run, model, document) tuples whose run may be None (study layouts)."""
    return tuple("" if part is None else str(part) for part in key)


def document_scores(documents: list[dict]) -> dict[tuple[str, str, str], dict[str, float]]:
    """(run, model, document) -> each criterion averaged over the judges that scored it (the
    way several raters' scores are averaged)."""
    grouped: dict[tuple, list[dict]] = {}
    for entry in documents:
        key = (entry["run"], entry["model"], entry["document"])
        grouped.setdefault(key, []).append(entry["scores"])
    out = {}
    for key, scores in grouped.items():
        out[key] = {c: math.fsum(s[c] for s in scores) / len(scores) for c in CRITERION_KEYS
                    if all(c in s for s in scores)}
    return out


def summarise(documents: list[dict]) -> list[dict]:
    """Per model: mean overall score over documents, with the percentile bootstrap of that mean
    (harness.ground.stats, the leaderboard's settings) and per-criterion means."""
    per_doc = document_scores(documents)
    models: dict[tuple[str, str], list[dict]] = {}
    for (run, model, _document), scores in sorted(per_doc.items(),
                                                  key=lambda kv: item_order(kv[0])):
        models.setdefault((run, model), []).append(scores)
    judges = {}
    for entry in documents:
        judges.setdefault((entry["run"], entry["model"]), set()).add(entry["judge"])
    out = []
    for (run, model), docs in models.items():
        overall = [d[OVERALL] for d in docs]
        boot = bootstrap_mean(overall)
        out.append({
            "run": run, "model": model, "mean": boot.mean,
            "n": sum(1 for e in documents if (e["run"], e["model"]) == (run, model)),
            "raters": len(judges[(run, model)]), "documents": len(docs),
            "criteria": {c: math.fsum(d[c] for d in docs) / len(docs) for c in CRITERION_KEYS},
            "boot_std": boot.boot_std, "ci_low": boot.ci_low, "ci_high": boot.ci_high,
        })
    return sorted(out, key=lambda m: item_order((m["model"], m["run"])))


def save(path: Path, data: dict) -> None:
    write_json(path, {**data, "format": FORMAT})


def load(path: Path | None) -> dict | None:
    """The judge-ratings file, or None when there is none."""
    if path is None or not Path(path).is_file():
        return None
    data = read_json(path, "judge ratings")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise FeynTuneError(f"{path} is not a FeynTune judge-ratings file ({FORMAT}); "
                            "write it with `feyntune judge`")
    return data
