"""docs/reference.md against the code: every "Implemented by" name exists, and the values the page
states are the ones the code uses (read from the code and its data files, not restated here)."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from harness.evaluate import metrics
from harness.ground import abstracts, stats

REPO = Path(__file__).resolve().parents[1]
DOC = (REPO / "docs" / "reference.md").read_text()
STABLE_SECTIONS = ("Curation", "Records", "Splits", "Down-sampling", "Mixes", "Sizes",
                   "Evaluation", "Prompt split", "Generation", "Perplexity", "SemScore",
                   "Word entropy", "Fake metadata", "Training", "Published figures",
                   "Table 3 perplexities", "Human ratings")


def section(title: str) -> str:
    match = re.search(rf"^#+ {re.escape(title)}\n(.*?)(?=^#+ |\Z)", DOC, re.MULTILINE | re.DOTALL)
    assert match, f"docs/reference.md has no section {title!r}"
    return match.group(1)


def citations() -> list[tuple[str, list[str]]]:
    found = []
    for paragraph in re.findall(r"Implemented by:(.*?)(?:\n\n|\Z)", DOC, re.DOTALL):
        for ref in re.findall(r"`([^`]+)`", paragraph.replace("\n", " ")):
            path, _, names = ref.partition(":")
            if re.fullmatch(r"[\w./-]+\.(py|yaml)|[\w./-]+/", path):
                found.append((path, [n.strip() for n in names.split(",") if n.strip()]))
    return found


def defined_names(path: Path) -> set[str]:
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def numbers(text: str) -> list[float]:
    return [float(x.replace(",", "")) for x in re.findall(r"\d[\d,]*(?:\.\d+)?(?:e-?\d+)?", text)]


def test_sections_that_comments_cite_exist():
    for title in STABLE_SECTIONS:
        section(title)


def test_every_cited_implementation_exists():
    cited = citations()
    assert len(cited) >= 25
    for path, names in cited:
        assert (REPO / path).exists(), f"docs/reference.md cites {path}, which does not exist"
        if path.endswith(".py"):
            missing = set(names) - defined_names(REPO / path)
            assert not missing, f"docs/reference.md cites {path}: {sorted(missing)}, not defined there"


def test_record_rules_match_the_code():
    ids = set(re.findall(r"`(\d{4}\.\d{4,5})`", section("Records")))
    assert ids == abstracts.CONTROL_IDS
    assert r"`\n\s*`" in section("Records") and abstracts._NEWLINE_RUN.pattern == r"\n\s*"
    assert not abstracts.is_withdrawn(None, "WITHDRAWN by the authors")
    assert abstracts.is_withdrawn("This paper has been WITHDRAWN", "x")
    assert abstracts.in_category(abstracts.primary_category("q-bio.NC hep-th"), "q-bio")


def test_split_sizes_and_settings_match_the_code():
    from finetune import curate

    sets = yaml.safe_load((REPO / "finetune" / "sets.yaml").read_text())
    text = section("Splits")
    assert "train_size=0.7, seed=42" in text and "test_size=0.5, seed=42" in text
    assert (sets["seed"], sets["split"]) == (42, {"train_size": 0.7, "validation_test_size": 0.5})
    assert sets["downsample"] == {"cs": 200000} and "200,000" in section("Down-sampling")
    parts = curate.split_rows(np.arange(105_384), seed=42)
    assert "73,768 / 15,808 / 15,808" in text
    assert [len(parts[k]) for k in curate.SPLITS] == [73_768, 15_808, 15_808]
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(105_384))
    assert set(re.findall(r"^\| (s\d+) \|", section("Mixes"), re.MULTILINE)) == set(sets["sets"])


def test_split_as_the_page_describes_it_with_datasets_directly():
    from datasets import Dataset

    from finetune import curate

    n = 1_001
    first = Dataset.from_dict({"row": list(range(n))}).train_test_split(
        train_size=0.7, seed=42, shuffle=True)
    second = first["test"].train_test_split(test_size=0.5, seed=42)
    by_datasets = {"train": first["train"]["row"], "validation": second["train"]["row"],
                   "test": second["test"]["row"]}
    m = n - int(np.floor(0.7 * n))
    assert [len(by_datasets[k]) for k in curate.SPLITS] == [700, m - int(np.ceil(m / 2)),
                                                              int(np.ceil(m / 2))]
    parts = curate.split_rows(np.arange(n), seed=42)
    assert {k: v.tolist() for k, v in parts.items()} == by_datasets


def test_the_cs_sample_rule_is_pandas_sample():
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame({"row": np.arange(5_000)})
    sampled = frame.sample(n=1_200, replace=False, random_state=42)["row"].to_numpy()
    assert "`numpy.random.RandomState(42).permutation(N)[:200000]`" in section("Down-sampling")
    assert sampled.tolist() == np.random.RandomState(42).permutation(5_000)[:1_200].tolist()


def test_prompt_split_example_and_pattern():
    text = section("Prompt split")
    assert "`(?<=[.!?])\\s+`" in text and abstracts._SENTENCE_BOUNDARY.pattern == r"(?<=[.!?])\s+"
    five = "A b. C d! E f? G h. I j."
    prompt, truth = abstracts.split_prompt(five)
    assert (prompt, truth) == ("A b. C d! E f?", "G h. I j.")  # "3 sentences of prompt and 2"
    assert abstracts.split_prompt("one two three four five") == ("one two three", "four five")


def test_generation_and_metric_settings_match_the_code():
    gen = yaml.safe_load(re.sub(r"!function \S+", "f",
                                (REPO / "tasks/hepth_completion/hepth_completion_gen.yaml").read_text()))
    assert gen["generation_kwargs"]["temperature"] == 0.8 and "temperature 0.8" in section("Generation")
    assert gen["generation_kwargs"]["max_gen_toks"] == 1024 and "1024 new tokens" in section("Generation")
    defaults = inspect.signature(stats.bootstrap_mean).parameters
    text = section("Perplexity").replace("\n", " ")
    for name in ("n_resamples", "confidence_level", "random_state"):
        assert f"{name}={defaults[name].default}" in text
    assert f"`{metrics.DEFAULT_SEMSCORE_MODEL}`" in section("SemScore")
    for metric in ("semscore", "semscore_full"):
        assert f"`{metric}`" in section("SemScore")
    assert metrics.metadata_leak("From: A [v1] Tue, 18 Mar 2003 GMT (24kb)") == 1
    assert metrics.word_entropy("a b c d") == pytest.approx(4.0)


def test_training_table_matches_the_paper_preset():
    preset = yaml.safe_load((REPO / "finetune" / "presets" / "paper.yaml").read_text())
    rows = dict(re.findall(r"^\| ([^|]+?) \| (.+?) \|$", section("Training"), re.MULTILINE))
    lora, optim = preset["lora"], preset["optim"]
    assert numbers(rows["LoRA"]) == [lora["r"], lora["alpha"], lora["dropout"]]
    assert "no bias" in rows["LoRA"] and lora["bias"] == "none"
    assert rows["LoRA-QKV targets"] == "`" + ", ".join(lora["targets"]["qkv"]) + "`"
    assert rows["LoRA-all targets"] == "`" + ", ".join(lora["targets"]["all"]) + "`"
    assert numbers(rows["optimizer"]) == [optim["learning_rate"], *optim["betas"], optim["eps"],
                                          optim["weight_decay"]]
    assert numbers(rows["schedule"])[:2] == [optim["warmup_fraction"] * 100,
                                             optim["min_lr_rate"] * 100]
    assert numbers(rows["length"]) == [preset["epochs"], preset["per_device_batch_size"]]
    assert numbers(rows["gradient clipping"]) == [optim["max_grad_norm"]]
    assert numbers(rows["seed"]) == [preset["seed"]]
    assert numbers(rows["evaluations"])[0] == preset["evaluations"]
    assert "multiple of 8" in rows["batches"] and preset["data_settings"]["pad_to_multiple_of"] == 8
    assert preset["quant"]["method"] == "nf4" and preset["quant"]["double_quant"] is True


def published() -> tuple[float, dict[tuple[str, str], float], dict[str, float]]:
    """(base perplexity, {(mix, variant): perplexity}, {model: human mean}) from the code's data."""
    data = yaml.safe_load((REPO / "studies" / "reference.yaml").read_text())
    variant = {"all": "LoRA-all", "qkv": "LoRA-QKV"}
    table = {(a["set"], variant[a["lora"]]): a["perplexity"] for a in data["models"]}
    human = {**data["human"]["categories"], **data["human"]["commercial"]}
    return data["base"]["perplexity"], table, human


def test_published_figures_match_the_data_the_leaderboard_uses():
    base, table, human = published()
    text = section("Table 3 perplexities")
    assert f"**{base:.2f}**" in text
    rows = re.findall(r"^\| (s\d+) \| ([\d.]+) \| ([\d.]+) \|$", text, re.MULTILINE)
    assert len(rows) == 10
    doc = {(mix, variant): float(v) for mix, a, q in rows
           for variant, v in (("LoRA-all", a), ("LoRA-QKV", q))}
    assert doc == table
    rows = dict(re.findall(r"^\| ([^|]+?) \| (\d+\.\d+) \|$", section("Human ratings"), re.MULTILINE))
    rows["Base"] = rows.pop("Llama-3.1-8B (base)")
    assert {k: float(v) for k, v in rows.items()} == human


def test_the_subtask_metrics_table_matches_the_task_yamls():
    text = section("Evaluation")
    table, task = {}, None
    for first, metrics_cell in re.findall(r"^\| (`hepth_\w+`)? ?\| ([^|]+) \|", text, re.MULTILINE):
        task = first.strip("`") or task
        table.setdefault(task, []).extend(re.findall(r"`(\w+)`", metrics_cell))
    for name, names in table.items():
        raw = (REPO / "tasks" / "hepth_completion" / f"{name}.yaml").read_text()
        listed = yaml.safe_load(re.sub(r"!function \S+", "f", raw))["metric_list"]
        per_document = [m["metric"] for m in listed if m["aggregation"] == "mean"]
        assert names == per_document
    assert set(table) == {"hepth_completion_gen", "hepth_completion_ppl"}
