"""How far to trust the judge: its agreement with human raters on the documents both rated,
and the agreement of several judges with each other. Overall scores (1-10) throughout, the one
score every human layout holds.

- per-model Spearman: rank correlation of the models' mean judge score with their mean human
  score over the shared documents (does the judge order the models as people do?);
- item-level Krippendorff's alpha (interval) between the judge and each rater, and among the
  raters themselves for comparison (1 = perfect, 0 = chance, < 0 = systematic disagreement);
- offset: mean of judge minus human score per shared document, with its bootstrap interval.
"""

from __future__ import annotations

import math

from scipy import stats

from harness.ground.stats import bootstrap_mean
from harness.ground.stats import interval_alpha as alpha
from harness.judge.judge_ratings import document_scores, item_order
from harness.review.criteria import OVERALL
from harness.review.uncertainty import ci_text

MIN_MODELS = 3  # a rank correlation of two models is always +1 or -1


def _mean(values) -> float:
    values = list(values)
    return math.fsum(values) / len(values)


def spearman(x: list[float], y: list[float], minimum: int = MIN_MODELS) -> float | None:
    """Spearman's rho of paired values; None below `minimum` pairs or with a constant side."""
    if len(x) < minimum or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    return float(stats.spearmanr(x, y).statistic)


def _target(rating, judge_keys: dict) -> tuple | None:
    """The judge's (run, model) for a human rating: by run id, else by model label."""
    if rating.run is not None and rating.run in judge_keys["run"]:
        return judge_keys["run"][rating.run]
    return judge_keys["model"].get(rating.model)


def compare(judge_documents: list[dict], human_ratings: list) -> dict:
    """Agreement of the (judge-averaged) judge scores with human `Rating`s
    (harness.review.rating_import) on the (model, document) pairs both scored."""
    judge = {key: s[OVERALL] for key, s in document_scores(judge_documents).items()
             if OVERALL in s}
    keys = {"run": {}, "model": {}}
    for run, model, _doc in judge:
        keys["run"][run] = (run, model)
        keys["model"].setdefault(model, (run, model))
    human: dict[tuple, dict[str, float]] = {}   # (run, model, document) -> rater -> score
    unmatched = no_overall = 0
    for rating in human_ratings:
        if OVERALL not in rating.scores:
            no_overall += 1
            continue
        target = _target(rating, keys)
        item = (*target, str(rating.document)) if target else None
        if item is None or item not in judge:
            unmatched += 1
            continue
        human.setdefault(item, {})[rating.rater] = rating.scores[OVERALL]
    items = sorted(human, key=item_order)
    raters = sorted({r for scores in human.values() for r in scores})
    result = {"score": OVERALL, "items": len(items), "raters": raters,
              "human_ratings_used": sum(len(s) for s in human.values()),
              "human_ratings_unmatched": unmatched, "human_ratings_without_overall": no_overall}
    if not items:
        return {**result, "models": [], "spearman": None, "alpha": {}, "alpha_humans": None,
                "offset": None}

    models = []
    for run, model in sorted({item[:2] for item in items}, key=item_order):
        mine = [i for i in items if i[:2] == (run, model)]
        models.append({"run": run, "model": model, "documents": len(mine),
                       "judge_mean": _mean(judge[i] for i in mine),
                       "human_mean": _mean(_mean(human[i].values()) for i in mine)})
    result["models"] = models
    result["spearman"] = spearman([m["judge_mean"] for m in models],
                                  [m["human_mean"] for m in models])
    result["alpha"] = {}
    for rater in raters:
        rated = [i for i in items if rater in human[i]]
        result["alpha"][rater] = {"items": len(rated), "alpha": alpha(
            [[judge[i] for i in rated], [human[i][rater] for i in rated]])}
    result["alpha_humans"] = alpha(
        [[human[i].get(r, math.nan) for i in items] for r in raters]) if len(raters) > 1 else None
    offsets = [judge[i] - _mean(human[i].values()) for i in items]
    boot = bootstrap_mean(offsets)
    result["offset"] = {"mean": boot.mean, "ci_low": boot.ci_low, "ci_high": boot.ci_high}
    return result


def between_judges(judge_documents: list[dict]) -> dict | None:
    """Several judges: alpha among them and each pair's item-level Spearman; None for one."""
    judges = sorted({e["judge"] for e in judge_documents})
    if len(judges) < 2:
        return None
    scores: dict[tuple, dict[str, float]] = {}
    for e in judge_documents:
        if OVERALL in e["scores"]:
            scores.setdefault((e["run"], e["model"], e["document"]), {})[e["judge"]] = \
                e["scores"][OVERALL]
    items = sorted(scores, key=item_order)
    pairs = []
    for a_index, first in enumerate(judges):
        for second in judges[a_index + 1:]:
            both = [i for i in items if first in scores[i] and second in scores[i]]
            x = [scores[i][first] for i in both]
            y = [scores[i][second] for i in both]
            rho = spearman(x, y, minimum=2)
            pairs.append({"judges": [first, second], "items": len(both), "spearman": rho})
    return {"judges": judges, "items": len(items), "score": OVERALL,
            "alpha": alpha([[scores[i].get(j, math.nan) for i in items] for j in judges]),
            "pairs": pairs}


def _fmt(value, digits: int = 2, sign: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def describe(result: dict, judges: list[str]) -> list[str]:
    """Lines for the terminal and the leaderboard's notes."""
    who = ", ".join(judges) or "judge"
    if not result["items"]:
        return [(f"judge agreement ({who}): no document rated by both the judge and a human "
                 f"({result['human_ratings_unmatched']} human rating(s) matched no judged "
                 "completion)")]
    models = result["models"]
    lines = [
        (f"judge agreement ({who}, overall score, {result['items']} completion(s) rated by "
         f"both, {result['human_ratings_used']} human rating(s) from {len(result['raters'])} "
         f"rater(s); {result['human_ratings_unmatched']} human rating(s) matched no judged "
         f"completion, {result['human_ratings_without_overall']} had no overall score)"),
        f"  per-model Spearman of mean scores: {_fmt(result['spearman'])} over "
        f"{len(models)} model(s)" + ("" if len(models) >= MIN_MODELS
                                     else f" (needs at least {MIN_MODELS})"),
    ]
    for rater, entry in result["alpha"].items():
        lines.append(f"  Krippendorff's alpha, judge vs {rater}: {_fmt(entry['alpha'])} "
                     f"({entry['items']} item(s))")
    if result["alpha_humans"] is not None:
        lines.append(f"  Krippendorff's alpha among the human raters: "
                     f"{_fmt(result['alpha_humans'])}")
    offset = result["offset"]
    lines.append(f"  judge minus human, mean offset: {_fmt(offset['mean'], sign=True)} "
                 + ci_text(offset["ci_low"], offset["ci_high"], sign=True))
    return lines


def describe_judges(result: dict | None) -> list[str]:
    if not result:
        return []
    lines = [(f"agreement between judges ({', '.join(result['judges'])}, overall score, "
              f"{result['items']} completion(s)): Krippendorff's alpha {_fmt(result['alpha'])}")]
    for pair in result["pairs"]:
        lines.append(f"  Spearman {pair['judges'][0]} vs {pair['judges'][1]}: "
                     f"{_fmt(pair['spearman'])} ({pair['items']} item(s))")
    return lines
