"""Leaderboard rows: per-run statistics of the per-document values, and the reported figures.

A measured row's perplexity is the arithmetic mean of the samples' `ppl_token` values with the
harness's percentile bootstrap (harness.ground.stats.bootstrap_mean, the reference study's settings);
the corpus-level figure beside it is lm-eval's `word_perplexity` aggregate. Reported rows come
from the study file (studies/reference.yaml by default, or `--study FILE`) and never enter a measured row's numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from harness.ground.names import short_name
from harness.ground.stats import bootstrap_gap, bootstrap_mean
from harness.ground.subtasks import FRESH_PAIRS, GEN_TASK, PPL_TASK, per_document_metrics
from harness.runs.identity import LORA_ALL, LORA_QKV
from harness.runs.labels import run_labels
from harness.runs.lmeval_outputs import Run
from harness.study.registry import REGISTRY_FILE, Registry

REPORTED_FILE = REGISTRY_FILE  # the study registry: the one home of the published figures
MEASURED = "measured"
REPORTED = "reported"


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    digits: int | None = None   # decimals shown in md/html; None: text or integer
    percent: bool = False
    note: str = ""              # what the column holds (html tooltip, md legend)
    count: bool = False         # a whole number: sorts as a number though it has no decimals

    @property
    def numeric(self) -> bool:
        return self.digits is not None or self.count


# Every column of leaderboard.csv and index.html, in order.
COLUMNS = [
    Column("model", "Model"),
    Column("source", "Source", note="measured here, or reported by the reference study"),
    Column("base_model", "Base model"),
    Column("adapter", "Adapter"),
    Column("mix", "Data mix"),
    Column("lora", "LoRA"),
    Column("study", "Study model", note="the reference study's name of the model (s3, s3_qkv, Base)"),
    Column("provider", "Provider"),
    Column("backend", "Backend", note="lm-eval model that ran it (hf, vllm, provider, ...)"),
    Column("dtype", "Dtype", note="weights' precision as the run asked for it"),
    Column("documents", "Docs", note="documents evaluated", count=True),
    Column("ppl_token_mean", "PPL", 2,
           note="token perplexity: arithmetic mean over abstracts of exp(mean token loss)"),
    Column("ppl_token_boot_std", "PPL sd", 3, note="bootstrap standard deviation of the mean"),
    Column("ppl_token_ci_low", "PPL 95% low", 2, note="bootstrap 95% percentile interval"),
    Column("ppl_token_ci_high", "PPL 95% high", 2, note="bootstrap 95% percentile interval"),
    Column("ppl_token_boot_mean", "PPL boot mean", 2, note="mean of the bootstrap distribution"),
    Column("word_perplexity_corpus", "Corpus word PPL", 2,
           note="lm-eval's corpus-level word perplexity (exp of total loss per word)"),
    Column("ppl_word_mean", "Word PPL", 2, note="arithmetic mean of per-abstract word perplexity"),
    # Measured beside reported (harness.leaderboard.compare).
    Column("reported_ppl", "Reported PPL", 2, note="the study's published PPL of this model"),
    Column("ppl_minus_reported", "PPL - reported", 2, note="measured PPL minus the published one"),
    Column("reported_in_ci", "Reported in CI",
           note="whether the published PPL lies inside the measured 95% bootstrap interval"),
    Column("reported_caveat", "Caveat",
           note="how the measured run differs from the published setting (base model, "
           "documents, dtype): there the comparison says little"),
    Column("ppl_change_vs_base", "PPL change vs base", 2,
           note="adapter minus its base model on the same documents: mean per-abstract change"),
    Column("ppl_change_ci_low", "Change 95% low", 2,
           note="paired bootstrap 95% percentile interval of the change"),
    Column("ppl_change_ci_high", "Change 95% high", 2,
           note="paired bootstrap 95% percentile interval of the change"),
    Column("ppl_change_documents", "Change docs", note="documents both runs scored", count=True),
    Column("ppl_change_base_run", "Base run", note="the base model's run compared with"),
    Column("semscore_mean", "SemScore", 3,
           note="cosine similarity of completion and true continuation (all-mpnet-base-v2)"),
    Column("semscore_min", "SemScore min", 3),
    Column("semscore_full_mean", "SemScore-full", 3,
           note="full abstract against prompt + completion (the reference code's variant)"),
    Column("word_entropy_mean", "exp(word entropy)", 1,
           note="mean exp of the Shannon entropy of the completion's word frequencies"),
    Column("metadata_leak_rate", "Metadata leak", 1, percent=True,
           note="share of completions with fake arXiv metadata"),
    Column("repetition_mean", "Repetition", 3),
    Column("completion_words_mean", "Completion words", 1),
    # hepth_completion_fresh (issue 9): the same figures on papers newer than the cut date, and
    # fresh minus standard with a bootstrap interval of the difference (harness.ground.stats).
    Column("fresh_after", "Fresh after",
           note="fresh documents: first versioned after this date (hepth_completion_fresh)"),
    Column("fresh_documents", "Fresh docs", note="fresh documents evaluated"),
    Column("ppl_token_fresh_mean", "PPL fresh", 2, note="PPL on the fresh documents"),
    Column("ppl_token_fresh_gap", "PPL gap", 2,
           note="PPL fresh minus PPL on the standard documents not in the fresh set; > 0: "
           "worse on papers the model cannot have seen"),
    Column("ppl_token_fresh_gap_ci_low", "PPL gap 95% low", 2,
           note="bootstrap 95% percentile interval of the gap"),
    Column("ppl_token_fresh_gap_ci_high", "PPL gap 95% high", 2,
           note="bootstrap 95% percentile interval of the gap"),
    Column("semscore_fresh_mean", "SemScore fresh", 3, note="SemScore on the fresh documents"),
    Column("semscore_fresh_gap", "SemScore gap", 3,
           note="SemScore fresh minus standard; < 0: worse on papers the model cannot have seen"),
    Column("semscore_fresh_gap_ci_low", "SemScore gap 95% low", 3),
    Column("semscore_fresh_gap_ci_high", "SemScore gap 95% high", 3),
    Column("human_mean", "Human", 2, note="human rating, 1-10"),
    Column("human_n", "Ratings", count=True),
    Column("human_ci_low", "Human 95% low", 2, note="bootstrap 95% percentile interval of the mean"),
    Column("human_ci_high", "Human 95% high", 2, note="bootstrap 95% percentile interval of the mean"),
    Column("human_raters", "Raters", count=True),
    Column("human_documents", "Rated docs", count=True),
    # feyntune judge: an LLM's overall rating on the human rubric.
    Column("judge_mean", "Judge", 2, note="LLM judge's overall rating, 1-10, mean over documents"),
    Column("judge_ci_low", "Judge 95% low", 2, note="bootstrap 95% percentile interval"),
    Column("judge_ci_high", "Judge 95% high", 2, note="bootstrap 95% percentile interval"),
    Column("judge_n", "Judged docs", note="documents the judge rated", count=True),
    # API models: what the answers behind the row cost (providers/prices.yaml, batch or direct).
    Column("api_input_tokens", "API input tokens", note="input tokens billed", count=True),
    Column("api_output_tokens", "API output tokens", note="output tokens billed", count=True),
    Column("api_cost_usd", "API cost (USD)", 4,
           note="cost of the answers at the price table's rates (batch answers at batch rates)"),
    Column("api_route", "API route", note="batch API, direct requests, or both"),
    Column("date", "Date (UTC)"),
    Column("temperature", "Temp", 2),
    Column("max_tokens", "Max tokens", count=True),
    Column("limit", "Limit", count=True),
    Column("run", "Run"),
]
COLUMN_KEYS = [c.key for c in COLUMNS]
# Column of the mean of each per-document metric of the generation subtask.
_GEN_MEANS = {("metadata_leak_rate" if m == "metadata_leak" else f"{m}_mean"): m
              for m in per_document_metrics(GEN_TASK)}
# The figure each fresh column compares with its standard subtask's.
_FRESH_FIGURES = (("ppl_token", PPL_TASK), ("semscore", GEN_TASK))
_FRESH_OF = {standard: fresh for fresh, standard in FRESH_PAIRS.items()}


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values)


def _ppl_stats(run: Run, row: dict) -> None:
    docs = run.samples.get(PPL_TASK)
    aggregates = run.aggregates.get(PPL_TASK, {})
    row["word_perplexity_corpus"] = aggregates.get("word_perplexity")
    if not docs:
        row["ppl_token_mean"] = aggregates.get("ppl_token")
        row["ppl_word_mean"] = aggregates.get("ppl_word")
        return
    values = [d.metrics["ppl_token"] for d in docs]
    row["ppl_word_mean"] = _mean([d.metrics["ppl_word"] for d in docs])
    bad = sum(1 for v in values if not math.isfinite(v))
    if bad:
        # An unscorable abstract makes the mean infinite; say so instead of averaging it away.
        row["ppl_token_mean"] = math.inf
        run.notes.append(f"{PPL_TASK}: {bad} of {len(values)} documents have a non-finite "
                         "ppl_token; no bootstrap")
        return
    boot = bootstrap_mean(values)
    row.update(
        ppl_token_mean=boot.mean,
        ppl_token_boot_mean=boot.boot_mean,
        ppl_token_boot_std=boot.boot_std,
        ppl_token_ci_low=boot.ci_low,
        ppl_token_ci_high=boot.ci_high,
    )


def _gen_stats(run: Run, row: dict) -> None:
    docs = run.samples.get(GEN_TASK)
    aggregates = run.aggregates.get(GEN_TASK, {})
    for column, metric in _GEN_MEANS.items():
        if docs:
            row[column] = _mean([d.metrics[metric] for d in docs])
        else:
            row[column] = aggregates.get(metric)
    if docs:
        row["semscore_min"] = min(d.metrics["semscore"] for d in docs)


def _fresh_stats(run: Run, row: dict) -> None:
    """Fresh figures beside the standard ones. The gap compares with the standard documents
    that are not fresh ones (a date cut on the same source makes them overlap), so the two
    samples are disjoint; it needs both subtasks in the same run."""
    for metric, standard_task in _FRESH_FIGURES:
        fresh_task = _FRESH_OF[standard_task]
        docs = run.samples.get(fresh_task)
        if not docs:
            row[f"{metric}_fresh_mean"] = run.aggregates.get(fresh_task, {}).get(metric)
            continue
        row["fresh_documents"] = max(row["fresh_documents"] or 0, len(docs))
        row["fresh_after"] = row["fresh_after"] or next(
            (d.fresh_after for d in docs if d.fresh_after), None)
        fresh = [d.metrics[metric] for d in docs]
        row[f"{metric}_fresh_mean"] = _mean(fresh)
        fresh_ids = {d.arxiv_id for d in docs}
        standard = [d.metrics[metric] for d in run.samples.get(standard_task, [])
                    if d.arxiv_id not in fresh_ids]
        if len(standard) < 2 or len(fresh) < 2:
            continue
        if not all(math.isfinite(v) for v in standard + fresh):
            run.notes.append(f"{fresh_task}: non-finite {metric} values; no fresh gap")
            continue
        gap = bootstrap_gap(standard, fresh)
        row.update({f"{metric}_fresh_gap": gap.gap, f"{metric}_fresh_gap_ci_low": gap.ci_low,
                    f"{metric}_fresh_gap_ci_high": gap.ci_high})


HUMAN_FIELDS = {"human_mean": "mean", "human_n": "n", "human_ci_low": "ci_low",
                "human_ci_high": "ci_high", "human_raters": "raters",
                "human_documents": "documents"}


def human_columns(row: dict, entry: dict | None) -> None:
    """Human columns of a row from one imported model (mean, CI, counts)."""
    if not entry:
        return
    for column, key in HUMAN_FIELDS.items():
        if entry.get(key) is not None:
            row[column] = entry[key]


def measured_row(run: Run, label: str, human: dict | None, judge: dict | None = None) -> dict:
    ident = run.identity
    row = dict.fromkeys(COLUMN_KEYS)
    # Standard documents only: fresh ones are counted in their own column.
    doc_ids = {d.doc_id for task in (GEN_TASK, PPL_TASK) for d in run.samples.get(task, [])}
    row.update(
        model=label,
        source=MEASURED,
        base_model=ident.base,
        adapter=ident.adapter,
        mix=ident.mix,
        lora=ident.lora,
        provider=f"{ident.provider}/{ident.model}" if ident.is_api else None,
        backend=run.settings.get("model_class"),
        dtype=run.settings.get("dtype"),
        documents=len(doc_ids) if doc_ids else None,
        date=run.date_label,
        temperature=run.settings.get("temperature") if GEN_TASK in run.aggregates else None,
        max_tokens=run.settings.get("max_gen_toks") if GEN_TASK in run.aggregates else None,
        limit=run.settings.get("limit"),
        run=run.run_id,
    )
    for key in ("max_tokens", "limit"):  # lm-eval records both as floats (8.0, 3.0)
        if isinstance(row[key], float) and row[key].is_integer():
            row[key] = int(row[key])
    _ppl_stats(run, row)
    _gen_stats(run, row)
    _fresh_stats(run, row)
    human_columns(row, human)
    cost = getattr(run, "provider_cost", None)
    if cost:
        row.update(api_input_tokens=cost["input_tokens"], api_output_tokens=cost["output_tokens"],
                   api_cost_usd=cost["usd"], api_route=cost["route"])
    if judge:
        row.update(judge_mean=judge.get("mean"), judge_ci_low=judge.get("ci_low"),
                   judge_ci_high=judge.get("ci_high"), judge_n=judge.get("documents"))
    return row


def load_reported(path: Path = REPORTED_FILE) -> Registry:
    """The study registry (harness.study.registry reads and checks it)."""
    from harness.study import registry as study

    return study.load(path)


def reported_rows(registry: Registry) -> list[dict]:
    """A study's published figures, one row per model it gave a figure for."""
    base = registry.base
    short = short_name(base.hub)
    human = registry.human
    categories = human.get("categories") or {}
    rows = []

    def add(label, ppl=None, human_score=None, **ident):
        row = dict.fromkeys(COLUMN_KEYS)
        # the study gives means only, not the number of ratings per model
        row.update(model=label, source=REPORTED, ppl_token_mean=ppl, human_mean=human_score,
                   **ident)
        rows.append(row)

    # only what the study published: a model trained here has no reported row
    if base.perplexity is not None or categories.get(base.study) is not None:
        add(short, base.perplexity, categories.get(base.study), base_model=base.hub,
            study=base.study)
    for variant in (LORA_ALL, LORA_QKV):
        for model in registry.adapters:
            if model.lora == variant and model.perplexity is not None:
                add(f"{short} + {variant} {model.mix}", model.perplexity, None,
                    base_model=base.hub, mix=model.mix, lora=variant, study=model.study)
        if variant in categories:
            add(f"{short} + {variant} (mix not stated)", None, categories[variant],
                base_model=base.hub, lora=variant)
    for name, score in (human.get("commercial") or {}).items():
        add(name, None, score, provider=name, study=name)
    return rows


def sort_rows(rows: list[dict]) -> list[dict]:
    """By perplexity; rows without one (API models) after, by name; ties by date and run."""
    def key(row):
        ppl = row.get("ppl_token_mean")
        has_ppl = ppl is not None and not (isinstance(ppl, float) and math.isnan(ppl))
        return (0 if has_ppl else 1, ppl if has_ppl else 0.0, row["model"],
                row.get("date") or "", row.get("run") or "")
    return sorted(rows, key=key)


def build_rows(runs: list[Run], reported: Registry, human: dict,
               judge: dict | None = None) -> tuple[list[dict], list[dict]]:
    """(measured rows, reported rows), each sorted; `human` and `judge` map run id or label to
    ratings."""
    labels = run_labels(runs)
    judge = judge or {}
    measured = []
    for run in runs:
        label = labels[run.run_id]
        ratings = human.get(run.run_id) or human.get(label)
        judged = judge.get(run.run_id) or judge.get(label)
        measured.append(measured_row(run, label, ratings, judged))
    return sort_rows(measured), sort_rows(reported_rows(reported))
