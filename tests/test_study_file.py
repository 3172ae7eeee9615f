"""A study as a file (harness/study/spec.py): the reference study's file, every kind of bad file
as one line naming the file and the key, and `feyntune study plan|status` without running a
model (the run itself: tests/test_study_run.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from harness import cli
from harness.ground.errors import FeynTuneError
from harness.study import runner, spec

REPO = Path(__file__).resolve().parents[1]
EXPECTED_DRY_RUN = REPO / "tests" / "expected" / "reproduce_dry_run.txt"

GOOD = {
    "name": "mine",
    "base": {"model": "org/base-model", "dtype": "bfloat16"},
    "documents": {"data": "docs.jsonl"},
    "models": [
        {"name": "a", "set": "sets/a", "lora": "all"},
        {"name": "b", "set": "sets/a", "lora": "qkv", "preset": "fast",
         "overrides": {"epochs": 1}},
        {"name": "theirs", "adapter": "org/an-adapter", "set": "a", "lora": "all",
         "perplexity": 9.5},
    ],
}


def write(folder: Path, data: dict, name: str = "study.yaml") -> Path:
    """A study file, with the set folder and the documents its relative paths name."""
    for split in ("train", "validation", "test"):
        path = folder / "sets" / "a" / f"{split}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"id": "1", "abstract": "An abstract of hep-th."}) + "\n")
    (folder / "docs.jsonl").write_text(json.dumps({"id": "9", "abstract": "Some text."}) + "\n")
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_a_good_file_reads_into_typed_defaulted_options(tmp_path):
    study = spec.load(write(tmp_path, GOOD))
    assert study.base == spec.Base(model="org/base-model", dtype="bfloat16")
    assert study.evaluation == spec.Evaluation()  # every option defaulted
    a, b, theirs = study.models
    assert a.trained_here and a.preset == "paper" and a.overrides == {}
    assert b.preset == "fast" and b.overrides == {"epochs": 1}
    assert not theirs.trained_here and theirs.perplexity == 9.5
    # relative paths are read from the file's folder; a hub id stays a hub id
    assert runner.set_folder(study, runner.Folders(tmp_path / "out"), "sets/a") == \
        tmp_path / "sets" / "a"
    assert study.weights("org/an-adapter") == "org/an-adapter"
    # no throughput stated: the reference study's assumptions, and the estimate says so
    assert study.throughput == spec.load().throughput
    assert study.throughput_file == spec.REFERENCE_FILE
    # every option is documented
    for cls in (spec.Study, spec.Base, spec.Documents, spec.Curation, spec.Evaluation,
                spec.Model, spec.Human, spec.Throughput):
        assert all(f.metadata.get("help") for f in cls.__dataclass_fields__.values()), cls


def _with(change) -> dict:
    data = json.loads(json.dumps(GOOD))
    change(data)
    return data


BAD = {
    "unknown key": (lambda d: d.update(colour="blue"), "unknown key colour"),
    "unknown nested key": (lambda d: d["models"][0].update(rank=16), "unknown key models[0].rank"),
    "missing field": (lambda d: d["base"].pop("model"), "missing field base.model"),
    "missing models": (lambda d: d.pop("models"), "missing field models"),
    "duplicate model name": (lambda d: d["models"][1].update(name="a"),
                             "models[1].name: duplicate model name 'a'"),
    "unknown set": (lambda d: d["models"][0].update(set="nowhere"),
                    "models[0].set: unknown set 'nowhere'"),
    "unknown set of curation": (
        lambda d: (d.update(curation={"snapshot": "snap.jsonl"}),
                   d["models"][0].update(set="s11")),
        "models[0].set: unknown set 's11' (the sets config has s1, s2"),
    "bad LoRA variant": (lambda d: d["models"][1].update(lora="qkvo"),
                         "models[1].lora: bad LoRA variant 'qkvo'"),
    "wrong type": (lambda d: d.update(evaluation={"temperature": "hot"}),
                   "evaluation.temperature must be float, not 'hot'"),
    "unknown training key": (lambda d: d["models"][1].update(overrides={"epochz": 2}),
                             "models[1].overrides: unknown configuration key 'epochz'"),
    "unknown preset": (lambda d: d["models"][0].update(preset="turbo"),
                       "models[0].preset: unknown preset 'turbo'"),
    "two document sources": (lambda d: d["documents"].update(hub="org/docs"),
                             "documents needs exactly one of set, data, hub"),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_a_bad_file_is_one_line_naming_the_file_and_the_key(kind, tmp_path, capsys):
    change, expected = BAD[kind]
    path = write(tmp_path, _with(change))
    with pytest.raises(FeynTuneError) as err:
        spec.load(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and expected in message, message
    # the command: one line, exit 2, before anything is done
    assert cli.main(["study", "plan", str(path), "--out", str(tmp_path / "out")]) == 2
    printed = capsys.readouterr().err.strip().splitlines()
    assert printed == [f"feyntune study: error: {message}"]
    assert not (tmp_path / "out").exists()


def test_not_yaml_and_not_a_mapping(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(FeynTuneError, match=f"^{broken}: not valid YAML"):
        spec.load(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(FeynTuneError, match=f"^{listed}: a study file is a YAML mapping"):
        spec.load(listed)
    with pytest.raises(FeynTuneError, match="cannot read the study file"):
        spec.load(tmp_path / "absent.yaml")


# ---- the reference study's file ------------------------------------------------------------------

def _expected_dry_runs() -> dict[str, str]:
    """`feyntune reproduce --dry-run` output, captured on main before the registry became a
    study file (commit aeb6575), with the one change of where the assumptions are stated
    (harness/study/study.yaml -> studies/reference.yaml)."""
    runs, current = {}, None
    for line in EXPECTED_DRY_RUN.read_text().splitlines():
        if line.startswith("== "):
            current = line[3:]
            runs[current] = []
        elif not line.startswith("rc="):
            runs[current].append(line)
    return {args: "\n".join(lines) + "\n" for args, lines in runs.items()}


@pytest.mark.parametrize("args", sorted(_expected_dry_runs()))
def test_reproduce_dry_run_is_what_it_was(args, tmp_path, capsys):
    assert cli.main(["reproduce", "--dry-run", *args.split(), "--runs", str(tmp_path)]) == 0
    assert capsys.readouterr().out == _expected_dry_runs()[args]


def test_the_reference_study_plan_has_reproduces_estimate(tmp_path, capsys):
    assert cli.main(["study", "plan", str(spec.REFERENCE_FILE), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "estimated GPU time: 106 h 56 min (training 0 s, evaluation 106 h 56 min)" in out
    assert out.count("  eval/") == 21 and "train/" not in out and "  data " not in out
    assert "(after all 21 eval jobs)" in out
    assert not tmp_path.exists() or not any(tmp_path.iterdir())  # a plan writes nothing


# ---- plan and status of a study of one's own -----------------------------------------------------

def _trained(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    (folder / "run.json").write_text("{}")


def test_plan_counts_training_from_the_set_and_the_assumed_rate(tmp_path, capsys):
    path = write(tmp_path, GOOD)
    for n in range(99):  # 100 training abstracts
        with open(tmp_path / "sets" / "a" / "train.jsonl", "a") as f:
            f.write(json.dumps({"id": str(n), "abstract": "More text."}) + "\n")
    out_dir = tmp_path / "out"
    assert cli.main(["study", "plan", str(path), "--out", str(out_dir), "--stage", "train"]) == 0
    out = capsys.readouterr().out
    rates = spec.load().throughput.training_abstracts_per_second
    # a: paper preset, 4 epochs of 100; b: fast preset, 1 epoch
    shown = runner.reproduce.duration(400 / rates["paper"])
    assert f"  {'train/a':<20} {shown:>14}  LoRA-all on sets/a, paper preset, 400 abstract " \
        "passes" in out
    assert "LoRA-QKV on sets/a, fast preset, 100 abstract passes" in out
    assert "eval/" not in out and "report" not in out
    assert "ASSUMED, not measured here: one H200 per job" in out


def test_status_says_each_models_state(tmp_path, capsys, monkeypatch):
    data = _with(lambda d: d["models"].append({"name": "c", "set": "sets/a", "lora": "all"}))
    path = write(tmp_path, data)
    folders = runner.Folders(tmp_path / "out")
    _trained(folders.adapter("a"))
    checkpoint = folders.adapter("b") / "checkpoints" / "checkpoint-3"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 3,
                                                               "max_steps": 8}))
    log = folders.logs / "77_0_log.out"
    runner.record_outcomes(folders, [runner.Outcome("train/c", runner.State.FAILED,
                                                    "feyntune train exited with 2", log)])
    queued = {"eval/theirs": {"job_id": "4242", "state": "PENDING"}}
    monkeypatch.setattr("harness.study.fanout.submitted", lambda logs: queued)
    assert cli.main(["study", "status", str(path), "--out", str(folders.root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:6] == [
        "  Base    to do",
        "  a       trained",
        "  b       training (step 3 of 8)",
        "  theirs  queued (job 4242)",
        f"  c       failed: feyntune train exited with 2; log {log}",
    ]
    assert lines[-1] == "  leaderboard: not written yet"


@pytest.mark.parametrize("damage, expected", [
    (lambda sets: (sets / "train.jsonl").write_text(""), "train.jsonl is empty"),
    (lambda sets: (sets / "validation.jsonl").unlink(), "validation.jsonl is missing"),
])
def test_a_training_set_missing_or_empty_stops_the_run_before_any_job(damage, expected,
                                                                     tmp_path, capsys):
    path = write(tmp_path, GOOD)
    damage(tmp_path / "sets" / "a")
    out_dir = tmp_path / "out"
    assert cli.main(["study", "run", str(path), "--out", str(out_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "training set of a: " in err[0] and expected in err[0], err
    assert not out_dir.exists()


def test_a_missing_snapshot_stops_the_run_before_any_job(tmp_path, capsys):
    data = _with(lambda d: (d.update(curation={"snapshot": "absent.jsonl"}),
                            d["models"][0].update(set="s1")))
    path = write(tmp_path, data)
    assert cli.main(["study", "run", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"curation.snapshot: {tmp_path / 'absent.jsonl'} does not exist (needed to build " \
        "s1)" in err
    assert not (tmp_path / "out").exists()
