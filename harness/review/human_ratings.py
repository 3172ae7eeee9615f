"""The human-ratings file that `feyntune review import` writes and the leaderboard reads.

{"format": "feyntune-human-ratings/1",
 "models": [{"run": "<run id or null>", "model": "<label>", "mean": 6.1, "n": 30,
             "raters": 3, "documents": 10, "criteria": {"grammar and style": 6.5, ...}}]}
A model is matched to a leaderboard row by its run id, else by its label; a model of the
reference study ("study": "s3", "Base", ...) fills that study model's reported row. Each model may
carry "ci_low"/"ci_high" (bootstrap 95% interval of the mean); the file may carry "categories"
and "agreement" (see load).
"""

from __future__ import annotations

from pathlib import Path

from harness.ground.errors import FeynTuneError
from harness.ground.jsonl import read_json, write_json

FORMAT = "feyntune-human-ratings/1"
DEFAULT_NAME = "human_ratings.json"
EXTRA_KEYS = ("categories", "agreement")


def load(path: Path | None) -> tuple[list[dict], dict]:
    """The rated models of a ratings file, and what it says beyond them: "categories" (per
    category of model: mean, n, ci_low, ci_high) and "agreement" (Krippendorff's alpha across
    raters). ([], {}) when there is no file."""
    if path is None or not Path(path).is_file():
        return [], {}
    data = load_file(path)
    models = [m for m in data.get("models", []) if isinstance(m, dict)]
    return models, {key: data[key] for key in EXTRA_KEYS if key in data}


def load_file(path: Path) -> dict:
    """The whole ratings file (models, and the rating rows of `review import`), format-checked."""
    data = read_json(path, "human ratings")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise FeynTuneError(f"{path} is not a FeynTune human-ratings file ({FORMAT}); "
                            "write it with `feyntune review import`")
    return data


def by_key(models: list[dict]) -> dict[str, dict]:
    """run id / label -> that model's ratings (the run id wins: labels change with dates)."""
    ratings: dict[str, dict] = {}
    for entry in models:
        for key in (entry.get("run"), entry.get("model")):
            if isinstance(key, str) and key and key not in ratings:
                ratings[key] = entry
    return ratings


def save(path: Path, models: list[dict], ratings: list[dict] | None = None,
         extras: dict | None = None) -> None:
    """Write the file; `ratings`, the rows behind the models, let later imports add to it;
    `extras`, the figures across models (see load)."""
    ordered = sorted(models, key=lambda m: (m.get("model") or "", m.get("run") or ""))
    data: dict = {"format": FORMAT, "models": ordered}
    if ratings is not None:
        data["ratings"] = ratings
    data.update({key: value for key, value in (extras or {}).items() if key in EXTRA_KEYS})
    write_json(path, data)
