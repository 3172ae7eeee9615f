"""`feyntune data build` never destroys what it did not write.

Each case is one a user hit: an --out folder that belongs to something else, a second build of
some sets into a folder holding all ten, two builds at once, a snapshot cut off mid-record, a
build killed with SIGKILL, and the permissions of what it writes.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from finetune import curate, curate_out
from harness import cli

SPLITS = ("train", "validation", "test")
SETS = tuple(f"s{i}" for i in range(1, 11))
REPO = Path(__file__).resolve().parents[1]


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def build_cli(*argv: str) -> int:
    return cli.main(["data", "build", *argv, "--no-progress"])


def visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def test_foreign_manifest_in_the_current_folder_is_refused(sample_path, tmp_path, monkeypatch,
                                                           capsys):
    project = tmp_path / "webapp"
    (project / ".git" / "objects").mkdir(parents=True)
    (project / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (project / "manifest.json").write_text('{"name": "my app", "start_url": "/"}\n')
    (project / "index.html").write_text("<html></html>\n")
    before = tree(project)
    monkeypatch.chdir(project)
    assert build_cli("--snapshot", str(sample_path), "--out", ".") == 2
    err = capsys.readouterr().err
    assert "did not write" in err and "Traceback" not in err
    assert tree(project) == before and sorted(p.name for p in project.iterdir()) == \
        [".git", "index.html", "manifest.json"]


def test_a_manifest_of_an_earlier_feyntune_is_refused_with_the_reason(sample_path, tmp_path,
                                                                      capsys):
    old = tmp_path / "data"
    (old / "s1").mkdir(parents=True)
    (old / "manifest.json").write_text(json.dumps({"command": "feyntune data build",
                                                   "sets": {"s1": {}}}))
    before = tree(old)
    assert build_cli("--snapshot", str(sample_path), "--out", str(old), "--sets", "s1") == 2
    assert "earlier feyntune" in capsys.readouterr().err and tree(old) == before


def test_a_second_build_keeps_the_other_sets_and_the_users_files(sample_path, tmp_path, capsys):
    data = tmp_path / "data"
    assert build_cli("--snapshot", str(sample_path), "--out", str(data)) == 0
    (data / "NOTES.md").write_text("my notes\n")
    (data / "runs").mkdir()
    (data / "runs" / "log.txt").write_text("mine\n")
    before = tree(data)
    capsys.readouterr()
    assert build_cli("--snapshot", str(sample_path), "--out", str(data), "--sets", "s3") == 0
    assert "kept from earlier builds: s1, s2, s4, s5, s6, s7, s8, s9, s10" in capsys.readouterr().out
    assert visible(data) == sorted(["NOTES.md", "manifest.json", "runs", *SETS])
    after = tree(data)
    assert {k: v for k, v in after.items() if k != "manifest.json"} == \
        {k: v for k, v in before.items() if k != "manifest.json"}
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["format"] == curate_out.FORMAT and list(manifest["sets"]) == list(SETS)
    assert "interrupted" not in manifest
    first = json.loads(before["manifest.json"])
    assert manifest["sets"] == first["sets"]  # the same input: the same entries


def test_set_folders_the_build_did_not_write_are_refused(sample_path, tmp_path, capsys):
    data = tmp_path / "data"
    assert build_cli("--snapshot", str(sample_path), "--out", str(data), "--sets", "s1") == 0
    (data / "s5").mkdir()
    (data / "s5" / "train.jsonl").write_text("{}\n")
    (data / "s1" / "my-subset.jsonl").write_text("{}\n")
    before = tree(data)
    assert build_cli("--snapshot", str(sample_path), "--out", str(data), "--sets", "s5") == 2
    assert "does not list it" in capsys.readouterr().err
    assert build_cli("--snapshot", str(sample_path), "--out", str(data), "--sets", "s1") == 2
    assert "my-subset.jsonl" in capsys.readouterr().err
    assert tree(data) == before
    (data / "hepth-fresh").mkdir()
    assert build_cli("--snapshot", str(sample_path), "--out", str(data), "--sets", "s2",
                     "--fresh-after", "2024-12-31") == 2
    assert "hepth-fresh" in capsys.readouterr().err


def test_a_concurrent_build_fails_fast(sample_path, tmp_path, capsys):
    data = tmp_path / "data"
    assert build_cli("--snapshot", str(sample_path), "--out", str(data), "--sets", "s1") == 0
    before = tree(data)
    # Another build holds the lock (flock locks of two open files conflict, even in one process).
    with open(data / curate_out.LOCK_NAME, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert build_cli("--snapshot", str(sample_path), "--out", str(data), "--sets", "s2") == 2
        err = capsys.readouterr().err
        assert "another `feyntune data build` is writing" in err
    assert tree(data) == before
    assert build_cli("--snapshot", str(sample_path), "--out", str(data), "--sets", "s2") == 0


_SLOW_BUILD = textwrap.dedent("""
    import sys, time
    from finetune import curate
    from harness import cli
    read = curate.collect
    def slow(*args, **kwargs):  # the lock is held from before the read to after the write
        time.sleep(4)
        return read(*args, **kwargs)
    curate.collect = slow
    sys.exit(cli.main(sys.argv[1:]))
""")


def test_two_processes_at_once_one_refused(sample_path, tmp_path):
    """Two real builds into one folder at once: the first writes, the second says why not."""
    data = tmp_path / "data"
    argv = ["data", "build", "--no-progress", "--snapshot", str(sample_path), "--out", str(data)]
    first = subprocess.Popen([sys.executable, "-c", _SLOW_BUILD, *argv, "--sets", "s1,s3"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 60
    while not (data / curate_out.LOCK_NAME).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    second = subprocess.run([str(Path(sys.executable).with_name("feyntune")), *argv, "--sets",
                             "s2"], capture_output=True, text=True, check=False)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert second.returncode == 2 and "another `feyntune data build`" in second.stderr
    assert "Traceback" not in second.stderr
    assert visible(data) == ["manifest.json", "s1", "s3"]


def test_a_plain_snapshot_cut_mid_record_is_reported(sample_path, tmp_path, capsys):
    lines = sample_path.read_bytes().splitlines(keepends=True)
    whole = tmp_path / "whole.jsonl"
    whole.write_bytes(b"".join(lines[:-1]))
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    assert build_cli("--snapshot", str(cut), "--out", str(tmp_path / "cut-out")) == 0
    printed = capsys.readouterr().out
    assert "truncated_input 1" in printed
    assert f"truncated input: line {len(lines):,}, the last" in printed
    cut_manifest = json.loads((tmp_path / "cut-out" / "manifest.json").read_text())
    whole_manifest = curate.build(whole, tmp_path / "whole-out", progress=False).manifest
    assert cut_manifest["skipped"]["truncated_input"] == 1
    assert cut_manifest["records"]["truncated_line"] == len(lines)
    # The cut line is counted as bad input, not as a record of another category.
    assert cut_manifest["records"]["other_categories"] == \
        whole_manifest["records"]["other_categories"]
    # A last line that is whole but lacks its newline is an ordinary record.
    unterminated = tmp_path / "unterminated.jsonl"
    unterminated.write_bytes(b"".join(lines).rstrip(b"\n"))
    manifest = curate.build(unterminated, tmp_path / "u-out", progress=False).manifest
    assert manifest["skipped"]["truncated_input"] == 0 and manifest["records"]["lines"] == \
        len(lines)


_KILLER = textwrap.dedent("""
    import os, signal, sys, pathlib
    from finetune import curate
    calls = 0
    real = pathlib.Path.rename
    def rename(self, target):
        global calls
        calls += 1
        if calls == int(sys.argv[3]):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, target)
    pathlib.Path.rename = rename
    curate.build(sys.argv[1], sys.argv[2], sets=["s1", "s3", "s5"], progress=False)
""")


@pytest.mark.parametrize("kill_at", [1, 4])
def test_sigkill_leaves_nothing_that_is_not_cleaned(sample_path, tmp_path, kill_at, capsys):
    data = tmp_path / "data"
    assert build_cli("--snapshot", str(sample_path), "--out", str(data), "--sets", "s1,s2") == 0
    (data / "NOTES.md").write_text("mine\n")
    s2 = tree(data / "s2")
    # rename 1 moves the old s1 aside; at rename 4 (the new s5) s1 and s3 are swapped in already.
    killed = subprocess.run([sys.executable, "-c", _KILLER, str(sample_path), str(data),
                             str(kill_at)], capture_output=True, text=True, check=False,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert killed.returncode == -9, killed.stderr
    assert any(p.name.startswith(curate_out.STAGE_PREFIX) for p in data.iterdir())
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # nothing beside --out
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["interrupted"] == ["s1", "s3", "s5"] and list(manifest["sets"]) == ["s2"]

    capsys.readouterr()
    assert build_cli("--snapshot", str(sample_path), "--out", str(data), "--sets", "s1") == 0
    assert "s3, s5 were being replaced when an earlier build was killed" in capsys.readouterr().out
    assert not any(p.name.startswith(curate_out.STAGE_PREFIX) for p in data.iterdir())
    assert (data / "NOTES.md").read_text() == "mine\n" and tree(data / "s2") == s2
    assert build_cli("--snapshot", str(sample_path), "--out", str(data), "--sets", "s3,s5") == 0
    manifest = json.loads((data / "manifest.json").read_text())
    assert "interrupted" not in manifest and list(manifest["sets"]) == ["s1", "s2", "s3", "s5"]


def test_permissions_follow_the_umask(sample_path, tmp_path):
    previous = os.umask(0o027)
    try:
        out = tmp_path / "data"
        curate.build(sample_path, out, sets=["s1"], progress=False)
    finally:
        os.umask(previous)
    assert out.stat().st_mode & 0o777 == 0o750
    assert (out / "s1").stat().st_mode & 0o777 == 0o750
    assert (out / "s1" / "train.jsonl").stat().st_mode & 0o777 == 0o640
    assert (out / "manifest.json").stat().st_mode & 0o777 == 0o640


def test_fresh_split_of_an_earlier_build_stays_and_says_which_sets_exclude_it(sample_path,
                                                                                tmp_path):
    data = tmp_path / "data"
    curate.build(sample_path, data, sets=["s1", "s3"], progress=False, fresh_after="2024-12-31")
    fresh = tree(data / "hepth-fresh")
    curate.build(sample_path, data, sets=["s3"], progress=False)
    manifest = json.loads((data / "manifest.json").read_text())
    assert tree(data / "hepth-fresh") == fresh
    assert manifest["fresh"]["excluded_from_sets"] == ["s1"]


def test_a_failed_first_build_leaves_no_folder(sample_path, tmp_path):
    hepph = tmp_path / "hepph.jsonl"
    hepph.write_bytes(b"".join(line for line in sample_path.read_bytes().splitlines(True)
                               if b'"categories": "hep-ph' in line))
    empty = tmp_path / "empty"
    empty.mkdir()
    for out in (tmp_path / "new", empty):
        with pytest.raises(curate.FeynTuneError, match="no usable hep-th"):
            curate.build(hepph, out, progress=False)
    assert not (tmp_path / "new").exists() and list(empty.iterdir()) == []
