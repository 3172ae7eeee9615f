"""Uncertainty of imported human ratings, and the reference study's model names.

- per model: the percentile bootstrap 95% interval of the mean overall rating (harness.ground.stats,
  the study's settings), with the number of raters and documents beside it;
- per category of model (Base, LoRA-all, LoRA-QKV, ...): the same, for the study's published
  category means;
- across raters: Krippendorff's alpha at the interval level (the `krippendorff` package), on the
  rated texts that every rater scored;
- a rated model named as the study names it (`s3`, `s3_qkv`, `Base`, `ChatGPT-4`) carries that
  name as "study", so the leaderboard puts its ratings on the study's reported row.
"""

from __future__ import annotations

import math

from harness.review.criteria import OVERALL
from harness.runs.identity import lora_variant


def category_of(model: str, category: str | None, registry) -> str | None:
    """A rating's category of model: the registry's for a study model (Base, LoRA-all,
    LoRA-QKV), else the ratings file's category column, named as the registry names it."""
    name = registry.name_of(model)
    if name is not None and registry.name_of(name, commercial_only=True) is None:
        found = registry.model(name)
        return registry.base.study if found.is_base else found.lora
    if not category:
        return None
    if category.strip().lower() == registry.base.study.lower():
        return registry.base.study
    return lora_variant(category) or category.strip()


def ci_text(low: float | None, high: float | None, sign: bool = False, digits: int = 2) -> str:
    """'[95% CI low, high]': the one way the harness writes an interval ("n/a" for a bound
    it has none of; `sign`: "+0.12" for changes and offsets)."""
    def bound(value) -> str:
        if value is None:
            return "n/a"
        return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"

    return f"[95% CI {bound(low)}, {bound(high)}]"


def interval_text(entry: dict) -> str:
    """' [95% CI low, high]' of a summarised model or category; '' without an interval."""
    low, high = entry.get("ci_low"), entry.get("ci_high")
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (low, high)):
        return ""
    return " " + ci_text(low, high)


def _interval(values: list[float]) -> dict:
    from harness.ground.stats import bootstrap_mean

    if len(values) < 2:
        return {"ci_low": None, "ci_high": None}
    boot = bootstrap_mean(values)
    return {"ci_low": boot.ci_low, "ci_high": boot.ci_high}


def krippendorff_interval(ratings: list) -> dict:
    """Krippendorff's alpha (interval) of the overall scores across raters, on the texts
    (document x model) that every rater scored; alpha None with the reason when undefined."""
    from harness.ground.stats import interval_alpha

    scores: dict[tuple, dict[str, float]] = {}
    for rating in ratings:
        if OVERALL in rating.scores:
            scores.setdefault((rating.text, rating.run, rating.model), {})[rating.rater] = \
                rating.scores[OVERALL]
    raters = sorted({r for by_rater in scores.values() for r in by_rater})
    items = sorted((k for k, by_rater in scores.items() if len(by_rater) == len(raters)),
                   key=lambda k: tuple(str(part) for part in k))
    result = {"level": "interval", "raters": len(raters), "items": len(items), "alpha": None}
    if len(raters) < 2 or len(items) < 2:
        result["why"] = "needs at least 2 raters who scored at least 2 of the same texts"
        return result
    result["alpha"] = interval_alpha([[scores[item][rater] for item in items] for rater in raters])
    if result["alpha"] is None:
        result["why"] = "every rating is the same value"
    return result


def annotate(models: list[dict], ratings: list, registry=None) -> tuple[list[dict], dict]:
    """Add "ci_low"/"ci_high" and "study" to each summarised model (ratings.summarise) and
    return the file's extras: per-category summaries and the agreement across raters."""
    from harness.study import registry as study_registry

    registry = registry or study_registry.load()
    overall: dict[tuple, list[float]] = {}
    categories: dict[str, list] = {}
    for rating in ratings:
        if OVERALL not in rating.scores:
            continue
        overall.setdefault((rating.run, rating.model), []).append(rating.scores[OVERALL])
        category = category_of(rating.model, getattr(rating, "category", None), registry) \
            if rating.run is None else None
        if category:
            categories.setdefault(category, []).append(rating)
    for model in models:
        model.update(_interval(overall.get((model.get("run"), model.get("model")), [])))
        if model.get("run") is None:
            model["study"] = registry.name_of(str(model.get("model")))
    summaries = []
    for category, items in sorted(categories.items()):
        values = [r.scores[OVERALL] for r in items]
        summaries.append({"category": category, "mean": math.fsum(values) / len(values),
                          "n": len(values), "raters": len({r.rater for r in items}),
                          "documents": len({r.text for r in items}), **_interval(values)})
    extras = {"agreement": krippendorff_interval(ratings)}
    if summaries:
        extras["categories"] = summaries
    return models, extras
