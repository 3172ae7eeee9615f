"""Measured beside reported, and each adapter against its base model.

- A measured row that is one of the reference study's models (`s3`, `s3_qkv`, `Base`, named by
  `feyntune reproduce` in the run's lm-eval metadata, else recognised from the model's identity)
  gets the published perplexity, measured minus published, and whether the published figure
  lies inside the measured 95% bootstrap interval.
- An adapter row whose base model was measured on the same documents gets the paired-bootstrap
  change in perplexity against it (harness.ground.stats.paired_change).
- Imported human ratings fill the Human columns of the reported rows by the study's model names.
"""

from __future__ import annotations

import math

from harness.ground.errors import FeynTuneError
from harness.ground.subtasks import PPL_TASK
from harness.leaderboard import rows
from harness.review.uncertainty import interval_text
from harness.runs.lmeval_outputs import Run


def per_document_ppl(run: Run) -> dict:
    """Document key (arXiv id, else lm-eval's doc_id) -> token perplexity."""
    return {d.arxiv_id or str(d.doc_id): d.metrics["ppl_token"]
            for d in run.samples.get(PPL_TASK, []) if "ppl_token" in d.metrics}


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def beside_reported(row: dict, reported_ppl: float | None) -> None:
    """Reported figure, difference and inside-CI verdict on a measured row."""
    row["reported_ppl"] = reported_ppl
    mean = row.get("ppl_token_mean")
    if reported_ppl is None or not _finite(mean):
        return
    row["ppl_minus_reported"] = mean - reported_ppl
    low, high = row.get("ppl_token_ci_low"), row.get("ppl_token_ci_high")
    if _finite(low) and _finite(high):
        row["reported_in_ci"] = "yes" if low <= reported_ppl <= high else "no"


def caveat(row: dict, registry) -> str | None:
    """How a measured row differs from the setting of the published figures, or None: another
    base model, fewer documents, another dtype. Such a row sits beside the published figure
    only as a pointer."""
    from harness.ground.names import short_name

    problems = []
    base = registry.base.hub
    measured_base = row.get("base_model")
    if measured_base and short_name(str(measured_base)).lower() != short_name(base).lower():
        problems.append(f"base {measured_base}, not {base}")
    published = int(registry.documents["count"])
    documents = row.get("documents")
    if isinstance(documents, int) and documents < published:
        problems.append(f"{documents:,} of the {published:,} published documents")
    dtype = registry.settings.get("dtype")
    if row.get("dtype") and dtype and row["dtype"] != dtype:
        problems.append(f"{row['dtype']}, not {dtype}")
    return "; ".join(problems) or None


def change_verdict(ci_low: float, ci_high: float) -> str:
    """What a perplexity change's 95% interval shows: "lower" when it lies wholly below zero
    (the adapter beats its base model), "higher" wholly above, else "not shown"."""
    return "lower" if ci_high < 0 else "higher" if ci_low > 0 else "not shown"


def _base_run(run: Run, runs: list[Run]) -> Run | None:
    """The run of this adapter's base model sharing the most documents (latest on a tie)."""
    mine = set(per_document_ppl(run))
    candidates = [r for r in runs if not r.identity.adapter and not r.identity.is_api
                  and r.identity.base == run.identity.base and per_document_ppl(r)]
    if not candidates or not mine:
        return None
    return max(candidates, key=lambda r: (len(mine & set(per_document_ppl(r))),
                                          r.started.timestamp() if r.started else 0.0, r.run_id))


def change_against_base(run: Run, runs: list[Run]):
    """(base run, harness.ground.stats.PairedChange) of an adapter run against its base model on the
    documents both scored; None when it has no measured base. FeynTuneError when a perplexity
    is not finite (a paired bootstrap of it means nothing)."""
    from harness.ground.stats import paired_change

    if not run.identity.adapter:
        return None
    base = _base_run(run, runs)
    if base is None:
        return None
    mine, theirs = per_document_ppl(run), per_document_ppl(base)
    if not all(math.isfinite(v) for v in list(mine.values()) + list(theirs.values())):
        raise FeynTuneError("non-finite ppl_token values; no paired change against the base")
    paired = paired_change(mine, theirs)
    return None if paired is None else (base, paired)


def against_base(row: dict, run: Run, runs: list[Run], labels: dict[str, str]) -> None:
    try:
        found = change_against_base(run, runs)
    except FeynTuneError as err:
        run.notes.append(str(err))
        return
    if found is None:
        return
    base, paired = found
    row.update(ppl_change_vs_base=paired.change.mean, ppl_change_ci_low=paired.change.ci_low,
               ppl_change_ci_high=paired.change.ci_high, ppl_change_documents=paired.n,
               ppl_change_base_run=labels.get(base.run_id, base.run_id))


def compare_measured(measured: list[dict], runs: list[Run], labels: dict[str, str],
                     registry) -> None:
    """Fill the study and comparison columns of the measured rows (in place)."""
    from harness.study.registry import study_name_of

    by_id = {run.run_id: run for run in runs}
    for row in measured:
        run = by_id.get(row.get("run"))
        if run is None:
            continue
        study = run.identity.study or study_name_of(run.identity, registry)
        if (run.study or {}).get("study_name", registry.spec.name) != registry.spec.name:
            study = None  # a model of another study file that happens to share a name
        row["study"] = study
        if study is not None and not run.identity.is_api:
            try:
                reported = registry.model(study).perplexity
            except FeynTuneError:  # a marker naming a model the registry lacks
                reported = None
                run.notes.append(f"study model {study!r} is not in the registry")
            beside_reported(row, reported)
            if reported is not None:
                row["reported_caveat"] = caveat(row, registry)
        against_base(row, run, runs, labels)


def fill_reported_human(reported: list[dict], rated: list[dict], extras: dict) -> set[str]:
    """Imported ratings of the study's models onto the reported rows: a row named by a study
    model (Base, s3, s3_qkv, ChatGPT-4) takes that model's ratings, a category row (LoRA-all,
    mix not stated) the category's. Returns the study names used."""
    by_study = {entry["study"]: entry for entry in rated if isinstance(entry.get("study"), str)}
    categories = {c.get("category"): c for c in extras.get("categories") or []
                  if isinstance(c, dict)}
    used = set()
    for row in reported:
        study = row.get("study")
        if study in by_study:
            rows.human_columns(row, by_study[study])
            used.add(study)
        elif study is None and row.get("lora") and not row.get("mix") \
                and row.get("lora") in categories:
            rows.human_columns(row, categories[row["lora"]])
    return used


def agreement_notes(extras: dict) -> list[str]:
    notes = []
    agreement = extras.get("agreement")
    if isinstance(agreement, dict) and agreement.get("alpha") is not None:
        notes.append(f"human ratings: Krippendorff's alpha (interval) {agreement['alpha']:.3f} "
                     f"across {agreement.get('raters')} raters on the {agreement.get('items')} "
                     "texts every rater scored")
    for category in extras.get("categories") or []:
        if isinstance(category, dict) and category.get("mean") is not None:
            notes.append(f"human ratings, category {category.get('category')}: "
                         f"{category['mean']:.2f}{interval_text(category)} "
                         f"(n={category.get('n')})")
    return notes
