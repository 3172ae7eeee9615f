"""`feyntune judge` against a loopback OpenAI-compatible judge (the real SDK on the wire), on
lm-eval run folders holding real hep-th abstracts: blind requests, seeded order, re-asked and
counted bad answers, the cache, the Judge column; and `feyntune judge agreement` against an
independent computation of every figure."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from fake_servers import FakeOpenAI, Fault
from scipy import stats

from harness import cli
from harness.ground.abstracts import clean_abstract, is_control, primary_category, split_prompt
from harness.judge import human_agreement as agreement
from harness.judge import judge_ratings as ratings
from harness.judge.rubric import CURRENT, parse_answer
from harness.leaderboard.command import build as build_leaderboard
from harness.review.criteria import CRITERION_KEYS, RATINGS_COLUMNS, REFERENCE_COLUMNS

DOCS = 4
# (folder, lm-eval config): a base model, an adapter on it, and an API model.
MODELS = {
    "TinyOrg__tiny-base": {"model": "hf", "model_args": {"pretrained": "TinyOrg/tiny-base"}},
    "LLMsForHepth__s3-L-3.1-8B-base_v3": {
        "model": "hf", "model_args": {"pretrained": "TinyOrg/tiny-base",
                                      "peft": "LLMsForHepth/s3-L-3.1-8B-base_v3"}},
    "anthropic__claude-rated-x": {"model": "provider",
                                  "model_args": {"provider": "anthropic",
                                                 "model": "claude-rated-x"}},
}
LABELS = {"TinyOrg__tiny-base": "tiny-base",
          "LLMsForHepth__s3-L-3.1-8B-base_v3": "tiny-base + LoRA-all s3",
          "anthropic__claude-rated-x": "anthropic/claude-rated-x"}
CANDIDATE = re.compile(r"Candidate continuation to rate:\n(.*?)(?:\n\nYour previous answer|\Z)",
                       re.DOTALL)


def candidate(request: str) -> str:
    return CANDIDATE.search(request).group(1)


def fake_scores(text: str) -> dict[str, int]:
    """The fake judge's verdict: a function of the candidate text only."""
    words = len(text.split())
    return {key: 1 + (words + 3 * i) % 10 for i, key in enumerate(CRITERION_KEYS)}


def honest_judge(request: str) -> str:
    return json.dumps(fake_scores(candidate(request)))


@pytest.fixture(scope="module")
def abstracts(sample_path) -> list[tuple[str, str, str]]:
    """(arXiv id, prompt, true continuation) of the first real hep-th abstracts."""
    out = []
    with open(sample_path, encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            if primary_category(record["categories"]) != "hep-th" or is_control(record["id"]):
                continue
            prompt, truth = split_prompt(clean_abstract(record["abstract"]))
            if prompt and truth:
                out.append((record["id"], prompt, truth))
            if len(out) == DOCS:
                return out
    pytest.fail("too few hep-th abstracts in the sample")


def completion_of(folder: str, index: int, truth: str) -> str:
    """Distinct, model-free text per model: a prefix of the truth of a model-specific length."""
    words = truth.split()
    keep = max(1, len(words) * (list(MODELS).index(folder) + 1) // 4 + index)
    return " ".join(words[:keep])


def write_runs(root: Path, abstracts) -> Path:
    """lm-eval's output layout: results_<date>.json + samples_<task>_<date>.jsonl per model."""
    for number, (folder, config) in enumerate(MODELS.items()):
        out = root / folder
        out.mkdir(parents=True)
        date_id = f"2025-01-0{number + 1}T10-00-00.000000"
        (out / f"results_{date_id}.json").write_text(json.dumps({
            "results": {"hepth_completion_gen": {"alias": "gen", "semscore,none": 0.5}},
            "config": config, "date": 1735725600.0 + 86400 * number,
            "n-samples": {"hepth_completion_gen": {"original": DOCS, "effective": DOCS}},
            "model_name": config["model_args"].get("model", "x"),
        }))
        lines = []
        for index, (arxiv_id, prompt, truth) in enumerate(abstracts):
            lines.append(json.dumps({
                "doc_id": index, "doc": {"id": arxiv_id, "prompt": prompt, "y_true": truth},
                "filtered_resps": [completion_of(folder, index, truth)],
                "semscore": 0.5, "semscore_full": 0.5, "word_entropy": 10.0,
                "completion_words": 10, "metadata_leak": 0, "repetition": 0.0,
            }))
        (out / f"samples_hepth_completion_gen_{date_id}.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def runs(tmp_path, abstracts, monkeypatch) -> Path:
    monkeypatch.setenv("FEYNTUNE_HOME", str(tmp_path / "home"))
    return write_runs(tmp_path / "runs", abstracts)


def judge(server, runs: Path, out: Path, *extra: str, model="judge-model", concurrent=1) -> int:
    spec = f"openai-compatible:{model},base_url={server.base_url},num_concurrent={concurrent}"
    return cli.main(["judge", "--judge", spec, "--runs", str(runs), "--out", str(out),
                     "--quiet", *extra])


def user_messages(server) -> list[str]:
    return [server.prompt_of(r["body"]) for r in server.requests]


# ---- requests --------------------------------------------------------------------------------

def test_requests_are_blind_and_scores_recorded(runs, tmp_path, abstracts):
    out = tmp_path / "results" / "judge_ratings.json"
    with FakeOpenAI(answer=honest_judge) as server:
        assert judge(server, runs, out, "--n", "all", concurrent=3) == 0
        bodies = [r["body"] for r in server.requests]
    assert len(bodies) == len(MODELS) * DOCS
    names = {"TinyOrg", "tiny-base", "LLMsForHepth", "s3-L-3.1", "LoRA", "claude-rated-x",
             "anthropic", "results_", "samples_", str(runs), *MODELS, *LABELS.values()}
    sent_completions = set()
    for body in bodies:
        wire = json.dumps(body)
        assert not [name for name in names if name in wire]
        assert body["messages"][0] == {"role": "system", "content": CURRENT.text}
        assert body["temperature"] == 0.0 and body["model"] == "judge-model"
        user = body["messages"][1]["content"]
        (doc,) = [a for a in abstracts if a[1] in user]  # the prompt and its own truth
        assert doc[2] in user
        sent_completions.add(candidate(user))
    expected = {completion_of(f, i, a[2]) for f in MODELS for i, a in enumerate(abstracts)}
    assert sent_completions == expected  # each completion once, one per request

    data = json.loads(out.read_text())
    assert data["format"] == ratings.FORMAT and data["rubric"]["version"] == CURRENT.version
    assert data["seed"] == 42 and data["failed"] == []
    assert data["judges"][0]["judge"] == "openai-compatible:judge-model"
    assert data["judges"][0]["scored"] == len(MODELS) * DOCS
    by_model = {m["model"]: m for m in data["models"]}
    for folder, label in LABELS.items():
        docs = [e for e in data["documents"] if e["model"] == label]
        assert len(docs) == DOCS
        texts = {a[0]: completion_of(folder, i, a[2]) for i, a in enumerate(abstracts)}
        for entry in docs:
            assert entry["scores"] == fake_scores(texts[entry["document"]])
        overall = np.array([fake_scores(t)["overall"] for t in texts.values()], dtype=float)
        # The Judge figure: plain mean and scipy's percentile bootstrap (the study's settings).
        ref = stats.bootstrap((overall,), np.mean, n_resamples=9999, method="percentile",
                              random_state=1)
        entry = by_model[label]
        assert entry["mean"] == pytest.approx(overall.mean(), rel=1e-12)
        assert entry["ci_low"] == pytest.approx(ref.confidence_interval.low, rel=1e-12)
        assert entry["ci_high"] == pytest.approx(ref.confidence_interval.high, rel=1e-12)
        assert entry["documents"] == DOCS and entry["raters"] == 1
        assert entry["run"].startswith(folder + "/results_")
        for key in CRITERION_KEYS:
            assert entry["criteria"][key] == pytest.approx(
                np.mean([fake_scores(t)[key] for t in texts.values()]), rel=1e-12)


def test_order_is_random_and_reproducible_from_the_seed(runs, tmp_path, monkeypatch):
    orders = {}
    for name, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        monkeypatch.setenv("FEYNTUNE_HOME", str(tmp_path / f"home-{name}"))  # nothing cached
        out = tmp_path / f"{name}.json"
        with FakeOpenAI(answer=honest_judge) as server:
            assert judge(server, runs, out, "--n", "3", "--seed", seed) == 0
            sent = [candidate(m) for m in user_messages(server)]
        data = json.loads(out.read_text())
        texts = {(e["run"], e["document"]): e for e in data["documents"]}
        assert len(texts) == len(MODELS) * 3
        orders[name] = (sent, data["order"])
    assert orders["a"] == orders["b"]
    assert orders["a"][0] != orders["c"][0]
    # Interleaved across models, not model by model.
    runs_in_order = [run for run, _ in orders["a"][1]]
    assert runs_in_order != sorted(runs_in_order)
    # --n 3 of 4 documents: every model gets the same three.
    docs_a = {(doc) for _, doc in orders["a"][1]}
    assert len(docs_a) == 3


def test_bad_answers_are_reasked_then_counted(runs, tmp_path, abstracts, capsys):
    """Malformed JSON once, then fine; a code fence (fine); 11 every time (failed and counted)."""
    first = completion_of("TinyOrg__tiny-base", 0, abstracts[0][2])
    fenced = completion_of("TinyOrg__tiny-base", 1, abstracts[1][2])
    hopeless = completion_of("anthropic__claude-rated-x", 2, abstracts[2][2])

    def answer(request: str) -> str:
        text = candidate(request)
        if text == first and "Your previous answer" not in request:
            return '{"grammar_style": 5, "coherence": '
        if text == fenced:
            return f"```json\n{honest_judge(request)}\n```"
        if text == hopeless:
            return json.dumps({**fake_scores(text), "accuracy": 11})
        return honest_judge(request)

    out = tmp_path / "judge.json"
    with FakeOpenAI(answer=answer) as server:
        assert judge(server, runs, out, "--n", "all", concurrent=4) == 0
        sent = user_messages(server)
    assert len(sent) == len(MODELS) * DOCS + 1 + 2  # one re-ask, two for the hopeless one
    reasks = [m for m in sent if "Your previous answer" in m]
    assert sum("not a JSON object" in m for m in reasks) == 1
    assert sum("accuracy = 11 is outside 1-10" in m for m in reasks) == 2
    data = json.loads(out.read_text())
    (failed,) = data["failed"]
    assert failed["model"] == "anthropic/claude-rated-x" and failed["document"] == abstracts[2][0]
    assert "no usable answer in 3 attempt(s)" in failed["reason"]
    assert "outside 1-10" in failed["reason"]
    assert data["judges"][0]["failed"] == 1 and data["judges"][0]["reasked"] == 3
    assert len(data["documents"]) == len(MODELS) * DOCS - 1
    claude = next(m for m in data["models"] if m["model"] == "anthropic/claude-rated-x")
    assert claude["documents"] == DOCS - 1  # left out and counted, not guessed
    captured = capsys.readouterr()
    assert "1 without a usable answer, 3 re-asked" in captured.out
    assert "anthropic/claude-rated-x / " + abstracts[2][0] in captured.err


def test_transport_faults_are_the_runners_retries(runs, tmp_path, capsys):
    """A garbled HTTP reply and a 429 are retried by the provider layer, not re-asked."""
    out = tmp_path / "judge.json"
    with FakeOpenAI(answer=honest_judge) as server:
        server.inject(Fault(malformed=True), Fault(status=429, headers={"retry-after": "0"}))
        spec = (f"openai-compatible:judge-model,base_url={server.base_url},num_concurrent=1,"
                "backoff_initial=0.01,backoff_max=0.05")
        assert cli.main(["judge", "--judge", spec, "--runs", str(runs), "--out", str(out),
                         "--n", "1", "--quiet"]) == 0
        assert len(server.requests) == len(MODELS) + 2
    data = json.loads(out.read_text())
    assert data["failed"] == [] and data["judges"][0]["reasked"] == 0
    assert len(data["documents"]) == len(MODELS)
    assert "2 retries" in capsys.readouterr().out


@pytest.mark.parametrize("text, why", [
    ("", "empty answer"),
    ("The overall score is 7.", "not a JSON object"),
    ("[1, 2]", "not a JSON object"),
    (json.dumps(dict.fromkeys(CRITERION_KEYS[:-1], 5)), "missing overall"),
    (json.dumps({**dict.fromkeys(CRITERION_KEYS, 5), "novelty": 5}), "unexpected novelty"),
    (json.dumps({**dict.fromkeys(CRITERION_KEYS, 5), "overall": 7.5}), "not a whole number"),
    (json.dumps({**dict.fromkeys(CRITERION_KEYS, 5), "overall": "7"}), "not a whole number"),
    (json.dumps({**dict.fromkeys(CRITERION_KEYS, 5), "overall": True}), "not a whole number"),
    (json.dumps({**dict.fromkeys(CRITERION_KEYS, 5), "overall": 0}), "outside 1-10"),
])
def test_unusable_answers_say_why(text, why):
    with pytest.raises(ValueError, match=why):
        parse_answer(text)


def test_usable_answers():
    scores = dict(zip(CRITERION_KEYS, (1, 10, 3, 4, 5, 6)))
    assert parse_answer(json.dumps(scores)) == scores
    assert parse_answer("```\n" + json.dumps({**scores, "overall": 6.0}) + "\n```") == scores


def test_cache_makes_a_rerun_send_nothing_and_write_the_same_bytes(runs, tmp_path):
    out = tmp_path / "judge.json"
    with FakeOpenAI(answer=honest_judge) as server:
        assert judge(server, runs, out, "--n", "2") == 0
        first_bytes, sent = out.read_bytes(), len(server.requests)
        assert sent == len(MODELS) * 2
        assert judge(server, runs, out, "--n", "2") == 0
        assert len(server.requests) == sent
    assert out.read_bytes() == first_bytes


def test_several_judges_are_averaged_and_compared(runs, tmp_path):
    def harsh(request: str) -> str:
        scores = fake_scores(candidate(request))
        return json.dumps({k: max(1, v - 2) for k, v in scores.items()})

    out = tmp_path / "judge.json"
    with FakeOpenAI(answer=honest_judge) as one, FakeOpenAI(answer=harsh) as two:
        specs = [f"openai-compatible:{name},base_url={server.base_url}"
                 for name, server in (("judge-one", one), ("judge-two", two))]
        assert cli.main(["judge", "--judge", specs[0], "--judge", specs[1], "--runs", str(runs),
                         "--out", str(out), "--n", "all", "--quiet"]) == 0
    data = json.loads(out.read_text())
    per_judge: dict[str, dict] = {}
    for entry in data["documents"]:
        per_judge.setdefault(entry["judge"], {})[(entry["run"], entry["document"])] = \
            entry["scores"]["overall"]
    one, two = per_judge["openai-compatible:judge-one"], per_judge["openai-compatible:judge-two"]
    assert set(one) == set(two) and len(one) == len(MODELS) * DOCS
    for model in data["models"]:
        items = [k for k in one if k[0] == model["run"]]
        assert model["raters"] == 2 and model["n"] == 2 * DOCS
        assert model["mean"] == pytest.approx(np.mean([(one[k] + two[k]) / 2 for k in items]))
    between = data["between_judges"]
    keys = sorted(one)
    assert between["alpha"] == pytest.approx(
        kalpha_interval([[one[k] for k in keys], [two[k] for k in keys]]), rel=1e-9)
    (pair,) = between["pairs"]
    assert pair["spearman"] == pytest.approx(
        spearman_by_hand([one[k] for k in keys], [two[k] for k in keys]), rel=1e-9)


# ---- leaderboard -----------------------------------------------------------------------------

@pytest.fixture
def server():
    with FakeOpenAI(answer=honest_judge) as running:
        yield running


def test_judge_column_with_its_interval(runs, tmp_path, server):
    board = tmp_path / "board"
    assert judge(server, runs, board / "judge_ratings.json", "--n", "all") == 0
    data = json.loads((board / "judge_ratings.json").read_text())
    build_leaderboard(runs, board)
    first = {name: (board / name).read_bytes() for name in ("leaderboard.md", "leaderboard.csv",
                                                            "index.html")}
    with open(board / "leaderboard.csv", encoding="utf-8", newline="") as handle:
        rows = {r["model"]: r for r in csv.DictReader(handle)}
    for entry in data["models"]:
        row = rows[entry["model"]]
        assert float(row["judge_mean"]) == entry["mean"]
        assert float(row["judge_ci_low"]) == entry["ci_low"]
        assert float(row["judge_ci_high"]) == entry["ci_high"]
        assert int(row["judge_n"]) == DOCS
        assert row["human_mean"] == "NA"
    assert rows["Llama-3.1-8B"]["judge_mean"] == "NA"  # reported rows have no judge
    md = first["leaderboard.md"].decode()
    header = next(line for line in md.splitlines() if line.startswith("| Model | Base"))
    assert "| Human | Judge [95% CI] |" in header
    tiny = next(m for m in data["models"] if m["model"] == "tiny-base")
    assert (f"| {tiny['mean']:.2f} [{tiny['ci_low']:.2f}, {tiny['ci_high']:.2f}] (n={DOCS}) |"
            in md)
    assert "Judge column: openai-compatible:judge-model on rubric feyntune-judge-v1" in md
    page = first["index.html"].decode()
    assert 'data-key="judge_mean"' in page and 'data-key="judge_ci_low"' in page
    build_leaderboard(runs, board)  # regenerating gives the same bytes
    assert {name: (board / name).read_bytes() for name in first} == first

    # Human ratings in the study's layout, models named by their leaderboard labels.
    study = tmp_path / "study.csv"
    scores = {"tiny-base": 3, "tiny-base + LoRA-all s3": 5, "anthropic/claude-rated-x": 8}
    with open(study, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(REFERENCE_COLUMNS)
        for entry in data["documents"]:
            writer.writerow([entry["document"], entry["model"], "ann",
                             scores[entry["model"]], "completion", "hep-th"])
    assert cli.main(["judge", "agreement", str(study), "--ratings",
                     str(board / "judge_ratings.json")]) == 0
    build_leaderboard(runs, board)
    md = (board / "leaderboard.md").read_text()
    assert (f"- judge agreement (openai-compatible:judge-model, overall score, "
            f"{len(MODELS) * DOCS} completion(s) rated by both") in md
    assert "per-model Spearman of mean scores:" in md and "judge vs ann:" in md
    assert "judge rating of" not in md
    # A judged model whose run is gone is said, not dropped.
    gone = runs / "TinyOrg__tiny-base"
    gone.rename(tmp_path / "moved")
    build_leaderboard(runs, tmp_path / "board2", judge_ratings=board / "judge_ratings.json")
    md2 = (tmp_path / "board2" / "leaderboard.md").read_text()
    assert f"- judge rating of tiny-base (no measured row): {tiny['mean']:.2f} (n={DOCS})" in md2
    (tmp_path / "moved").rename(gone)
    # Re-running the judge (all cached) keeps the agreement, which still fits its scores.
    stored, sent = (board / "judge_ratings.json").read_bytes(), len(server.requests)
    assert judge(server, runs, board / "judge_ratings.json", "--n", "all") == 0
    assert len(server.requests) == sent
    assert (board / "judge_ratings.json").read_bytes() == stored


def test_agreement_with_review_page_exports(runs, tmp_path, capsys):
    """Page exports number the review's documents; the key maps them to arXiv ids."""
    out = tmp_path / "judge.json"
    with FakeOpenAI(answer=honest_judge) as server:
        assert judge(server, runs, out, "--n", "all") == 0
    assert cli.main(["review", "build", "--runs", str(runs), "--n", "3",
                     "--out", str(tmp_path / "review")]) == 0
    key = json.loads((tmp_path / "review" / "key.json").read_text())
    rows = []
    for doc in key["documents"]:
        for label in doc["labels"]:
            rows.append([key["review"], "bea", doc["document"], label,
                         *([6] * len(CRITERION_KEYS))])
    rows[0][-1] = ""  # criteria scored, overall left blank: counted, not compared
    export = tmp_path / "bea.csv"
    with open(export, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(RATINGS_COLUMNS)
        writer.writerows(rows)
    assert cli.main(["judge", "agreement", str(export), "--key",
                     str(tmp_path / "review" / "key.json"), "--ratings", str(out)]) == 0
    result = json.loads(out.read_text())["agreement"]
    # Every rated completion matched by arXiv id, but the one without an overall score.
    truth = sum(1 for row in rows if key["documents"][int(row[2]) - 1]["labels"][row[3]]["run"]
                is None)
    assert truth == 3  # one hidden true continuation per document: no judge score
    blank_is_truth = key["documents"][int(rows[0][2]) - 1]["labels"][rows[0][3]]["run"] is None
    assert result["human_ratings_without_overall"] == 1
    assert result["items"] == 3 * len(MODELS) - (0 if blank_is_truth else 1)
    assert result["human_ratings_unmatched"] == truth - (1 if blank_is_truth else 0)
    assert result["alpha"]["bea"]["items"] == result["items"]


# ---- agreement -------------------------------------------------------------------------------

def spearman_by_hand(x, y) -> float:
    def ranks(values):
        order = sorted(range(len(values)), key=lambda i: values[i])
        out = [0.0] * len(values)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2 + 1
            i = j + 1
        return out

    rx, ry = ranks(list(x)), ranks(list(y))
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    return cov / math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))


def kalpha_interval(rows) -> float:
    """Krippendorff's alpha, interval metric, from its definition: 1 - D_o / D_e over pairable
    values (units with at least two values)."""
    units = []
    for column in zip(*rows):
        values = [v for v in column if not math.isnan(v)]
        if len(values) >= 2:
            units.append(values)
    n = sum(len(u) for u in units)
    observed = sum(sum((a - b) ** 2 for a in u for b in u) / (len(u) - 1) for u in units) / n
    pooled = [v for u in units for v in u]
    expected = sum((a - b) ** 2 for a in pooled for b in pooled) / (n * (n - 1))
    return 1 - observed / expected


# The study's spreadsheet layout: 3 raters, 4 models, 5 papers; r3 skipped two texts.
PAPERS = ["2401.00001", "2401.00002", "2401.00003", "2401.00004", "2401.00005"]
STUDY_MODELS = ["Llama-3.1-8B", "LoRA-all", "Claude", "Gemini"]
HUMAN = {  # model -> rater -> scores per paper
    "Llama-3.1-8B": {"r1": [3, 4, 2, 5, 3], "r2": [4, 4, 3, 5, 2], "r3": [3, 5, 2, 4, None]},
    "LoRA-all": {"r1": [5, 6, 5, 6, 4], "r2": [6, 5, 5, 7, 5], "r3": [5, 6, 6, 6, 5]},
    "Claude": {"r1": [9, 8, 8, 9, 7], "r2": [8, 9, 8, 8, 8], "r3": [9, 9, None, 8, 8]},
    "Gemini": {"r1": [7, 6, 7, 7, 6], "r2": [7, 7, 6, 8, 6], "r3": [6, 7, 7, 7, 6]},
}
JUDGE = {  # model -> overall score per paper; Gemini's fourth paper was not judged
    "Llama-3.1-8B": [4, 5, 3, 5, 4],
    "LoRA-all": [6, 6, 5, 8, 6],
    "Claude": [8, 9, 9, 9, 8],
    "Gemini": [9, 9, 8, None, 9],   # ranks Gemini above Claude, unlike the raters
}


def test_agreement_against_an_independent_computation(tmp_path, capsys):
    human_csv = tmp_path / "study.csv"
    with open(human_csv, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(REFERENCE_COLUMNS)
        for model, raters in HUMAN.items():
            for rater, scores in raters.items():
                for paper, score in zip(PAPERS, scores):
                    if score is not None:
                        writer.writerow([paper, model, rater, score, "completion", "hep-th"])
        writer.writerow(["2401.00001", "Unjudged model", "r1", 5, "completion", "hep-th"])
    documents = [{"run": None, "model": model, "document": paper, "judge": "fake:judge",
                  "scores": {**dict.fromkeys(CRITERION_KEYS, 5), "overall": score}}
                 for model, scores in JUDGE.items()
                 for paper, score in zip(PAPERS, scores) if score is not None]
    path = tmp_path / "judge_ratings.json"
    ratings.save(path, {"judges": [{"judge": "fake:judge"}], "documents": documents,
                        "models": ratings.summarise(documents), "seed": 1,
                        "rubric": CURRENT.as_dict(), "failed": []})
    assert cli.main(["judge", "agreement", str(human_csv), "--ratings", str(path)]) == 0
    result = json.loads(path.read_text())["agreement"]

    # Independent computation from the tables above.
    items = [(m, p) for m in STUDY_MODELS for p in range(5)
             if JUDGE[m][p] is not None and any(HUMAN[m][r][p] is not None for r in HUMAN[m])]
    assert result["items"] == len(items) == 19
    human_item = {(m, p): np.mean([HUMAN[m][r][p] for r in HUMAN[m]
                                   if HUMAN[m][r][p] is not None]) for m, p in items}
    judge_means = [np.mean([JUDGE[m][p] for mm, p in items if mm == m]) for m in STUDY_MODELS]
    human_means = [np.mean([human_item[(m, p)] for mm, p in items if mm == m])
                   for m in STUDY_MODELS]
    by_model = {e["model"]: e for e in result["models"]}
    for model, j, h in zip(STUDY_MODELS, judge_means, human_means):
        assert by_model[model]["judge_mean"] == pytest.approx(j, rel=1e-12)
        assert by_model[model]["human_mean"] == pytest.approx(h, rel=1e-12)
    assert result["spearman"] == pytest.approx(spearman_by_hand(judge_means, human_means),
                                               rel=1e-12)
    for rater in ("r1", "r2", "r3"):
        rated = [(m, p) for m, p in items if HUMAN[m][rater][p] is not None]
        expected = kalpha_interval([[JUDGE[m][p] for m, p in rated],
                                    [HUMAN[m][rater][p] for m, p in rated]])
        assert result["alpha"][rater]["items"] == len(rated)
        assert result["alpha"][rater]["alpha"] == pytest.approx(expected, rel=1e-9)
    humans = kalpha_interval([[HUMAN[m][r][p] if HUMAN[m][r][p] is not None else math.nan
                               for m, p in items] for r in ("r1", "r2", "r3")])
    assert result["alpha_humans"] == pytest.approx(humans, rel=1e-9)
    # The bootstrap resamples the items in the file's order: by model, then paper.
    offsets = [JUDGE[m][p] - human_item[(m, p)]
               for m, p in sorted(items, key=lambda item: (item[0], PAPERS[item[1]]))]
    assert result["offset"]["mean"] == pytest.approx(np.mean(offsets), rel=1e-12)
    ref = stats.bootstrap((np.array(offsets),), np.mean, n_resamples=9999, method="percentile",
                          random_state=1)
    assert result["offset"]["ci_low"] == pytest.approx(ref.confidence_interval.low, rel=1e-12)
    assert result["offset"]["ci_high"] == pytest.approx(ref.confidence_interval.high, rel=1e-12)
    assert result["spearman"] == pytest.approx(0.8)  # one swapped pair of four models
    # Gemini's fourth paper (3 ratings, no judge score) and the unjudged model's row.
    assert result["human_ratings_unmatched"] == 3 + 1
    out = capsys.readouterr().out
    assert f"per-model Spearman of mean scores: {result['spearman']:.2f} over 4 model(s)" in out
    assert f"Krippendorff's alpha, judge vs r3: {result['alpha']['r3']['alpha']:.2f}" in out


def test_agreement_helpers_edge_cases():
    assert agreement.alpha([[5, 5, 5], [5, 5, 5]]) is None  # one value: undefined
    assert agreement.alpha([[5, math.nan], [math.nan, 6]]) is None  # nothing pairable
    assert agreement.spearman([1, 2], [2, 1]) is None  # two models say nothing
    assert agreement.between_judges([{"run": "a", "model": "m", "document": "d",
                                      "judge": "j", "scores": {"overall": 5}}]) is None


# ---- bad input -------------------------------------------------------------------------------

def test_bad_input_is_one_line(runs, tmp_path, capsys):
    assert cli.main(["judge", "--runs", str(runs)]) == 2
    assert "name at least one judge" in capsys.readouterr().err
    assert cli.main(["judge", "--judge", "openai", "--runs", str(runs)]) == 2
    assert "expected PROVIDER:MODEL" in capsys.readouterr().err
    assert cli.main(["judge", "--judge", "openai:x,speed=3", "--runs", str(runs)]) == 2
    assert "unknown option 'speed=3'" in capsys.readouterr().err
    foreign = tmp_path / "mine.json"
    foreign.write_text('{"something": "else"}')
    assert cli.main(["judge", "--judge", "openai-compatible:x,base_url=http://127.0.0.1:9",
                     "--runs", str(runs), "--out", str(foreign)]) == 2
    assert "not a FeynTune judge-ratings file" in capsys.readouterr().err
    assert foreign.read_text() == '{"something": "else"}'
    assert cli.main(["judge", "agreement", str(foreign), "--ratings",
                     str(tmp_path / "none.json")]) == 2
    assert "run `feyntune judge` first" in capsys.readouterr().err


def test_estimate_sends_nothing(runs, tmp_path, capsys):
    with FakeOpenAI(answer=honest_judge) as server:
        assert judge(server, runs, tmp_path / "j.json", "--n", "2", "--estimate") == 0
        assert server.requests == []
    out = capsys.readouterr().out
    assert f"openai-compatible:judge-model: {len(MODELS) * 2} request(s)" in out
    assert not (tmp_path / "j.json").exists()


# ---- batch route and budget (issue 27) ---------------------------------------------------------

def test_judge_through_a_batch_api_rates_as_the_direct_route(runs, tmp_path, monkeypatch,
                                                              capsys):
    from fake_batch_servers import BatchOpenAI

    monkeypatch.setenv("OPENAI_API_KEY", "sk-judge-batch-0123")
    with BatchOpenAI(answer=honest_judge) as server:
        spec = f"openai:gpt-4.1,base_url={server.base_url}"
        assert cli.main(["judge", "--judge", spec, "--runs", str(runs), "--out",
                         str(tmp_path / "direct.json"), "--quiet"]) == 0
        monkeypatch.setenv("FEYNTUNE_HOME", str(tmp_path / "home-batch"))  # nothing cached
        direct_requests = len(server.requests)
        capsys.readouterr()
        assert cli.main(["judge", "--judge", f"{spec},batch=true,max_cost=1", "--runs",
                         str(runs), "--out", str(tmp_path / "batch.json"), "--estimate"]) == 0
        assert re.search(r"at batch prices; at most \$[0-9.]+ before re-asks "
                         r"\(max_cost=\$1\)", capsys.readouterr().out)
        assert cli.main(["judge", "--judge", f"{spec},batch=true,batch_poll=0.02,max_cost=1",
                         "--runs", str(runs), "--out", str(tmp_path / "batch.json"),
                         "--quiet"]) == 0
        assert len(server.requests) == direct_requests and server.creations == 1
        capsys.readouterr()
        assert cli.main(["judge", "--judge", f"{spec},batch=true,max_cost=0.0001", "--runs",
                         str(runs), "--out", str(tmp_path / "other.json"), "--quiet",
                         "--max-tokens", "300"]) == 2  # other settings: nothing cached
        assert server.creations == 1
        assert re.search(r"refused, the worst case \$[0-9.]+ of \d+ request\(s\) is over "
                         r"max_cost=\$0.0001", capsys.readouterr().err)
    direct = json.loads((tmp_path / "direct.json").read_text())
    batch = json.loads((tmp_path / "batch.json").read_text())
    assert batch["documents"] == direct["documents"] and batch["models"] == direct["models"]
    entry = batch["judges"][0]
    assert entry["route"] == "batch" and entry["max_cost"] == 1.0
    assert entry["usage_all_answers"]["batch_requests"] == entry["answers"]
    assert entry["cost_all_answers"]["usd"] == pytest.approx(
        direct["judges"][0]["cost_all_answers"]["usd"] / 2, abs=2e-6)
