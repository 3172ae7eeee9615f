"""`feyntune leaderboard` on real lm-eval outputs (made by `feyntune eval` in conftest)."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from harness import cli
from harness.leaderboard.command import FIGURE_NAMES, build
from harness.leaderboard.rows import REPORTED_FILE
from harness.runs.identity import LORA_ALL, LORA_QKV, identify, parse_model_args
from harness.study import registry as study_registry

OUTPUTS = ("leaderboard.md", "leaderboard.csv", "index.html",
           *(f"figures/{name}" for name in FIGURE_NAMES))
# The published figures, typed in again here so that a wrong study file (studies/reference.yaml) fails.
PUBLISHED_PPL = {
    ("Llama-3.1-8B", None, None): 11.20,
    ("Llama-3.1-8B + LoRA-all s1", "s1", LORA_ALL): 10.32,
    ("Llama-3.1-8B + LoRA-all s3", "s3", LORA_ALL): 9.83,
    ("Llama-3.1-8B + LoRA-all s9", "s9", LORA_ALL): 12.16,
    ("Llama-3.1-8B + LoRA-all s10", "s10", LORA_ALL): 9.93,
    ("Llama-3.1-8B + LoRA-QKV s1", "s1", LORA_QKV): 10.04,
    ("Llama-3.1-8B + LoRA-QKV s2", "s2", LORA_QKV): 10.62,
    ("Llama-3.1-8B + LoRA-QKV s9", "s9", LORA_QKV): 10.64,
    ("Llama-3.1-8B + LoRA-QKV s10", "s10", LORA_QKV): 10.00,
}
PUBLISHED_HUMAN = {"Llama-3.1-8B": 3.75, "Llama-3.1-8B + LoRA-all (mix not stated)": 5.43,
                   "Llama-3.1-8B + LoRA-QKV (mix not stated)": 4.92, "Claude": 8.39,
                   "ChatGPT-4": 8.06, "Gemini": 6.92, "DeepSeek": 6.64}


def read_csv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def samples_values(runs: Path, task: str, metric: str) -> list[float]:
    (path,) = sorted(runs.rglob(f"samples_{task}_*.jsonl"))
    return [float(json.loads(line)[metric]) for line in path.read_text().splitlines() if line]


def copy_runs(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="module")
def board(hepth_eval_runs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("board")
    build(hepth_eval_runs, out)
    return out


# ---- numbers ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_perplexity_is_the_arithmetic_mean_of_the_samples(hepth_eval_runs, board):
    values = samples_values(hepth_eval_runs, "hepth_completion_ppl", "ppl_token")
    assert len(values) == 3  # --limit 3
    (row,) = [r for r in read_csv(board / "leaderboard.csv") if r["source"] == "measured"]
    assert float(row["ppl_token_mean"]) == pytest.approx(sum(values) / len(values), rel=1e-12)
    assert int(row["documents"]) == 3
    # The corpus figure beside it is lm-eval's own word_perplexity, not the mean of anything.
    (results,) = hepth_eval_runs.rglob("results_*.json")
    agg = json.loads(results.read_text())["results"]["hepth_completion_ppl"]
    assert float(row["word_perplexity_corpus"]) == pytest.approx(agg["word_perplexity,none"])
    semscores = samples_values(hepth_eval_runs, "hepth_completion_gen", "semscore")
    assert float(row["semscore_mean"]) == pytest.approx(np.mean(semscores), rel=1e-12)
    assert float(row["semscore_min"]) == pytest.approx(min(semscores), rel=1e-12)
    leaks = samples_values(hepth_eval_runs, "hepth_completion_gen", "metadata_leak")
    assert float(row["metadata_leak_rate"]) == pytest.approx(np.mean(leaks))
    assert float(row["temperature"]) == 0.8 and row["max_tokens"] == "8" and row["limit"] == "3"
    assert row["human_mean"] == "NA"  # no ratings imported: says so, not 0


@pytest.mark.slow
def test_bootstrap_agrees_with_scipy(hepth_eval_runs, board):
    values = np.array(samples_values(hepth_eval_runs, "hepth_completion_ppl", "ppl_token"))
    ref = stats.bootstrap((values,), np.mean, n_resamples=9999, confidence_level=0.95,
                          method="percentile", random_state=1)
    (row,) = [r for r in read_csv(board / "leaderboard.csv") if r["source"] == "measured"]
    dist = ref.bootstrap_distribution
    assert float(row["ppl_token_ci_low"]) == pytest.approx(ref.confidence_interval.low, rel=1e-12)
    assert float(row["ppl_token_ci_high"]) == pytest.approx(ref.confidence_interval.high, rel=1e-12)
    assert float(row["ppl_token_boot_std"]) == pytest.approx(ref.standard_error, rel=1e-12)
    assert float(row["ppl_token_boot_mean"]) == pytest.approx(dist.mean(), rel=1e-12)


@pytest.mark.slow
def test_reported_rows_present_and_apart(board):
    rows = read_csv(board / "leaderboard.csv")
    sources = [r["source"] for r in rows]
    # Measured first, then every reported row; never interleaved.
    assert sources == ["measured"] + ["reported"] * (len(rows) - 1)
    reported = {r["model"]: r for r in rows if r["source"] == "reported"}
    ppl_rows = [r for r in reported.values() if r["ppl_token_mean"] != "NA"]
    assert len(ppl_rows) == 21
    for (label, mix, lora), value in PUBLISHED_PPL.items():
        row = reported[label]
        assert float(row["ppl_token_mean"]) == value
        assert (row["mix"], row["lora"]) == (mix or "NA", lora or "NA")
        # A reported figure has no bootstrap of ours.
        assert row["ppl_token_boot_std"] == row["ppl_token_ci_low"] == "NA"
    for label, score in PUBLISHED_HUMAN.items():
        assert float(reported[label]["human_mean"]) == score
    # Sorted by perplexity within the reported block, models without one after.
    ppl = [float(r["ppl_token_mean"]) for r in rows[1:] if r["ppl_token_mean"] != "NA"]
    assert ppl == sorted(ppl)
    assert all(r["ppl_token_mean"] == "NA" for r in rows[1 + len(ppl):])
    md = (board / "leaderboard.md").read_text()
    measured_at, reported_at = md.index("## Measured"), md.index("## Reported by the reference")
    assert measured_at < md.index("| smollm2 |") < reported_at
    assert md.index("| Llama-3.1-8B + LoRA-all s3 |") > reported_at
    html = (board / "index.html").read_text()
    measured_body = html[html.index('id="measured-rows"'):html.index('id="reported-rows"')]
    assert "smollm2" in measured_body and "LoRA-all s3" not in measured_body


def test_registry_matches_the_published_study():
    data = yaml.safe_load(REPORTED_FILE.read_text())
    assert data["base"] == {"model": "meta-llama/Llama-3.1-8B", "dtype": "float16",
                            "name": "Base", "perplexity": 11.20}
    variant = {"all": LORA_ALL, "qkv": LORA_QKV}
    ppl = {(variant[a["lora"]], a["set"]): a["perplexity"] for a in data["models"]}
    mixes = [f"s{i}" for i in range(1, 11)]
    assert {m: ppl[(LORA_ALL, m)] for m in mixes} == dict(zip(
        mixes, [10.32, 11.38, 9.83, 10.41, 10.35, 10.34, 10.00, 9.90, 12.16, 9.93]))
    assert {m: ppl[(LORA_QKV, m)] for m in mixes} == dict(zip(
        mixes, [10.04, 10.62, 10.02, 10.08, 10.07, 10.05, 10.04, 10.04, 10.64, 10.00]))
    hubs = {a["name"]: a["adapter"] for a in data["models"]}
    assert len(hubs) == 20
    assert hubs["s3"] == "LLMsForHepth/s3-L-3.1-8B-base_v3"
    assert hubs["s1_qkv"] == "LLMsForHepth/s1-L-3.1-8B-qkv_v2"
    assert hubs["s7_qkv"] == "LLMsForHepth/s7-L-3.1-8B-qkv2"
    assert hubs["s10"] == "LLMsForHepth/s10-L-3.1-8B-base"
    assert hubs["s9_qkv"] == "LLMsForHepth/s9-L-3.1-8B-qkv"
    # the names s1..s10 and their mixes live in the file only, never in the harness's code
    registry = study_registry.load(REPORTED_FILE)
    for adapter in registry.adapters:
        assert (adapter.mix, adapter.lora) == next(
            (a["set"], variant[a["lora"]]) for a in data["models"] if a["name"] == adapter.study)
    assert data["human"]["categories"] == {"Base": 3.75, LORA_ALL: 5.43, LORA_QKV: 4.92}
    assert data["human"]["commercial"] == {"Claude": 8.39, "ChatGPT-4": 8.06, "Gemini": 6.92,
                                           "DeepSeek": 6.64}
    assert data["evaluation"] == {"merge": True, "temperature": 0.8, "max_new_tokens": 1024}
    assert data["documents"]["hub"] == "LLMsForHepth/hep-th_primary"


def test_no_study_name_is_left_in_the_code():
    """The mixes s1..s10 and the published adapters' hub names live in the study file only:
    the modules that tell which model a run is and read study files name none of them."""
    import ast
    import re

    root = Path(__file__).resolve().parents[1]
    for name in ("runs/identity.py", "runs/marker.py", "runs/lmeval_outputs.py",
                 "study/registry.py", "study/spec.py", "leaderboard/compare.py"):
        tree = ast.parse((root / "harness" / name).read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef))
                      and node.body and isinstance(node.body[0], ast.Expr)}
        texts = [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)
                 and isinstance(node.value, str) and id(node) not in docstrings]
        found = [t for t in texts
                 if re.search(r"\bs(?:10|[1-9])(?:_qkv)?\b|LLMsForHepth|hep-th_primary", t)]
        assert not found, (name, found)


# ---- determinism, robustness ------------------------------------------------------------------

@pytest.mark.slow
def test_regeneration_is_byte_identical(hepth_eval_runs, board, tmp_path):
    # the same command again (its footer names the command, output folder included)
    before = {name: (board / name).read_bytes() for name in OUTPUTS}
    build(hepth_eval_runs, board)
    for name in OUTPUTS:
        assert (board / name).read_bytes() == before[name], name
    html = (board / "index.html").read_text()
    assert "http://" not in html and "https://" not in html  # self-contained, no CDN
    assert html.count('src="data:image/png;base64,') == 3


@pytest.mark.slow
def test_bad_files_are_reported_and_skipped(hepth_eval_runs, tmp_path, capsys):
    runs = copy_runs(hepth_eval_runs, tmp_path / "runs")
    (folder,) = {p.parent for p in runs.rglob("results_*.json")}
    (results,) = folder.glob("results_*.json")
    date_id = results.stem[len("results_"):]
    real = json.loads(results.read_text())

    # A partial run: results file plus a samples file cut in the middle of a line.
    partial = runs / "partial"
    partial.mkdir()
    (partial / "results_2026-01-02T03-04-05.000001.json").write_text(
        json.dumps(dict(real, date=real["date"] + 86400)))
    lines = (folder / f"samples_hepth_completion_ppl_{date_id}.jsonl").read_text().splitlines()
    cut = "\n".join(lines[:-1] + [lines[-1][: len(lines[-1]) // 2]])
    (partial / "samples_hepth_completion_ppl_2026-01-02T03-04-05.000001.jsonl").write_text(cut)
    # A foreign lm-eval run (another task), a corrupt results file, an orphan and a stray file.
    foreign = dict(real, results={"hellaswag": {"acc,none": 0.5}})
    (runs / "other").mkdir()
    (runs / "other" / "results_2026-01-01T00-00-00.json").write_text(json.dumps(foreign))
    (runs / "other" / "results_2026-01-01T00-00-01.json").write_text('{"results": {')
    (runs / "other" / "samples_hepth_completion_gen_2025-12-31T00-00-00.jsonl").write_text("{}\n")
    (runs / "notes.txt").write_text("my notes")

    out = tmp_path / "out"
    assert cli.main(["leaderboard", "--runs", str(runs), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    for fragment in (
        "partial/samples_hepth_completion_ppl_2026-01-02T03-04-05.000001.jsonl: line 3 is not JSON",
        "other/results_2026-01-01T00-00-00.json: holds no hepth_completion subtask (tasks: hellaswag)",
        "other/results_2026-01-01T00-00-01.json: not valid JSON",
        "other/samples_hepth_completion_gen_2025-12-31T00-00-00.jsonl: no results_2025-12-31T00-00-00.json",
        "notes.txt: not an lm-eval output file",
    ):
        assert f"skipped {fragment}" in err
    rows = [r for r in read_csv(out / "leaderboard.csv") if r["source"] == "measured"]
    # Both real-results runs stay: the intact one in full, the partial one from lm-eval's
    # aggregates, labelled apart by date.
    assert len(rows) == 2 and len({r["model"] for r in rows}) == 2
    assert all(r["model"].startswith("smollm2 (20") for r in rows)
    partial_row = next(r for r in rows if r["run"].startswith("partial/"))
    assert partial_row["ppl_token_boot_std"] == "NA"  # no samples, no bootstrap
    assert float(partial_row["ppl_token_mean"]) == pytest.approx(
        real["results"]["hepth_completion_ppl"]["ppl_token,none"])
    md = (out / "leaderboard.md").read_text()
    assert "## Skipped files" in md and "`notes.txt`: not an lm-eval output file" in md


@pytest.mark.slow
def test_two_runs_of_one_model_are_both_kept_labelled_by_date(hepth_eval_runs, tmp_path):
    runs = copy_runs(hepth_eval_runs, tmp_path / "runs")
    (results,) = runs.rglob("results_*.json")
    date_id = results.stem[len("results_"):]
    later = "2027-01-01T10-00-00.000001"
    data = json.loads(results.read_text())
    data["date"] += 86400 * 30
    (results.parent / f"results_{later}.json").write_text(json.dumps(data))
    for samples in results.parent.glob(f"samples_*_{date_id}.jsonl"):
        shutil.copy(samples, samples.with_name(samples.name.replace(date_id, later)))
    build(runs, tmp_path / "out")
    rows = [r for r in read_csv(tmp_path / "out" / "leaderboard.csv") if r["source"] == "measured"]
    assert len(rows) == 2
    dates = sorted(r["date"] for r in rows)
    assert dates[0] != dates[1]
    assert sorted(r["model"] for r in rows) == sorted(f"smollm2 ({d})" for d in dates)


def test_reported_rows_alone_when_there_are_no_runs(tmp_path):
    out = tmp_path / "results"
    (tmp_path / "none").mkdir()
    assert cli.main(["leaderboard", "--runs", str(tmp_path / "none"), "--out", str(out)]) == 0
    rows = read_csv(out / "leaderboard.csv")
    assert rows and all(r["source"] == "reported" for r in rows)
    assert "No measured runs yet" in (out / "leaderboard.md").read_text()
    for name in OUTPUTS:
        assert (out / name).stat().st_size > 0


def test_a_runs_folder_that_does_not_exist_is_a_clear_error(tmp_path, capsys):
    out = tmp_path / "results"
    assert cli.main(["leaderboard", "--runs", str(tmp_path / "missing"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--runs {tmp_path / 'missing'}: no such folder" in err and "Traceback" not in err
    assert not out.exists()  # no leaderboard of reported rows alone


def test_cli_rejects_a_file_as_runs_folder(tmp_path, capsys):
    not_a_folder = tmp_path / "runs.txt"
    not_a_folder.write_text("x")
    assert cli.main(["leaderboard", "--runs", str(not_a_folder), "--out", str(tmp_path)]) == 2
    assert "is not a folder" in capsys.readouterr().err


# ---- model identity ---------------------------------------------------------------------------

@pytest.mark.parametrize("adapter, mix, lora", [
    ("LLMsForHepth/s1-L-3.1-8B-base", "s1", LORA_ALL),
    ("LLMsForHepth/s3-L-3.1-8B-base_v3", "s3", LORA_ALL),
    ("LLMsForHepth/s10-L-3.1-8B-base", "s10", LORA_ALL),
    ("LLMsForHepth/s1-L-3.1-8B-qkv_v2", "s1", LORA_QKV),
    ("LLMsForHepth/s7-L-3.1-8B-qkv2", "s7", LORA_QKV),
    ("LLMsForHepth/s9-L-3.1-8B-qkv", "s9", LORA_QKV),
])
def test_identity_from_published_adapter_names(adapter, mix, lora):
    """A published adapter run by hub id: its set and variant come from the study file."""
    ident = identify({"model": "hf", "model_args": f"pretrained=meta-llama/Llama-3.1-8B,peft={adapter}"})
    assert (ident.mix, ident.lora) == (None, None)  # the run itself says neither
    ident = study_registry.with_study_facts(ident, study_registry.load())
    assert (ident.base, ident.adapter, ident.mix, ident.lora) == (
        "meta-llama/Llama-3.1-8B", adapter, mix, lora)
    assert ident.label == f"Llama-3.1-8B + {lora} {mix}"
    assert study_registry.study_name_of(ident) == (mix if lora == LORA_ALL else f"{mix}_qkv")


def test_identity_from_an_adapters_run_json(tmp_path):
    adapter = tmp_path / "adapters" / "my-run"
    adapter.mkdir(parents=True)
    # The fields finetune/train.py writes.
    (adapter / "run.json").write_text(json.dumps({
        "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct", "lora_variant": "qkv",
        "target_modules": ["q_proj", "k_proj", "v_proj"],
        "data": {"folder": str(tmp_path / "data" / "s5"), "files": {}},
        "config": {"lora": {"variant": "qkv"}, "data": "data/s5"},
    }))
    ident = identify({"model": "hf", "model_args": {"pretrained": "/opt/models/smollm2",
                                                     "peft": str(adapter)}})
    assert (ident.base, ident.adapter, ident.mix, ident.lora) == ("smollm2", "my-run", "s5",
                                                                   LORA_QKV)
    assert ident.label == "smollm2 + LoRA-QKV s5"


def test_identity_of_provider_models():
    ident = identify({"model": "provider",
                      "model_args": {"provider": "anthropic", "model": "claude-sonnet-4-5"}})
    assert ident.is_api and ident.label == "anthropic/claude-sonnet-4-5"
    ident = identify({"model": "openai-chat-completions", "model_args": "model=gpt-4o"})
    assert ident.is_api and ident.label == "openai-chat-completions/gpt-4o"


def test_model_args_string_and_dict():
    assert parse_model_args("pretrained=a/b,peft=c,dtype=float32") == {
        "pretrained": "a/b", "peft": "c", "dtype": "float32"}
    assert parse_model_args({"pretrained": "x"}) == {"pretrained": "x"}
    assert parse_model_args(None) == {}


def test_csv_is_valid_with_explicit_missing_values(tmp_path):
    (tmp_path / "none").mkdir()
    build(tmp_path / "none", tmp_path)
    text = (tmp_path / "leaderboard.csv").read_text()
    rows = list(csv.reader(io.StringIO(text)))
    assert all(len(r) == len(rows[0]) for r in rows)
    assert ",," not in text  # no silent empty cells: NA says the value is missing


@pytest.mark.slow
def test_provider_run_settings_and_failures_are_shown(hepth_eval_runs, tmp_path):
    """A provider run (generation only): what was sent, and documents that failed, are shown."""
    runs = tmp_path / "runs"
    (results,) = hepth_eval_runs.rglob("results_*.json")
    (gen,) = hepth_eval_runs.rglob("samples_hepth_completion_gen_*.jsonl")
    data = json.loads(results.read_text())
    data["results"].pop("hepth_completion_ppl")
    data["config"]["model"] = "provider"
    data["config"]["model_args"] = {"provider": "anthropic", "model": "claude-sonnet-4-5"}
    data["config"]["provider_run"] = {
        "settings": [{"temperature": 0.5, "max_tokens": 64, "stop": []}],
        "document_errors": [{"request": "hepth_completion_gen doc 1", "error": "timeout"}],
    }
    (runs / "anthropic").mkdir(parents=True)
    (runs / "anthropic" / results.name).write_text(json.dumps(data))
    shutil.copy(gen, runs / "anthropic" / gen.name)
    build(runs, tmp_path / "out")
    (row,) = [r for r in read_csv(tmp_path / "out" / "leaderboard.csv") if r["source"] == "measured"]
    assert row["model"] == "anthropic/claude-sonnet-4-5" and row["ppl_token_mean"] == "NA"
    assert (row["temperature"], row["max_tokens"]) == ("0.5", "64")
    assert "1 request(s) failed at the provider" in (tmp_path / "out" / "leaderboard.md").read_text()
