"""The `feyntune` command: every subcommand is listed in pipeline order and has a working --help."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness import cli

COMMANDS = ["assets", "data", "train", "merge", "eval", "leaderboard", "review", "demo"]


def _feyntune(*args):
    return subprocess.run([sys.executable, "-m", "harness.cli", *args],
                          capture_output=True, text=True, check=False)


def test_help_lists_the_pipeline_in_order():
    out = _feyntune("--help")
    assert out.returncode == 0
    positions = [out.stdout.index(f"    {name}") for name in COMMANDS]
    assert positions == sorted(positions)


@pytest.mark.parametrize("args", [[c] for c in COMMANDS if c not in {"assets", "data", "review"}]
                         + [["assets", "fetch"], ["assets", "path"], ["data", "build"],
                            ["review", "build"], ["review", "import"]])
def test_every_subcommand_has_help(args):
    if args == ["eval"]:  # eval hands --help on to lm_eval after its own preamble
        out = _feyntune("eval", "--help")
        assert out.returncode == 0 and "lm_eval" in out.stdout + out.stderr
        return
    parser = cli.build_parser()
    with pytest.raises(SystemExit) as stop:
        parser.parse_args([*args, "--help"])
    assert stop.value.code == 0


def test_unknown_arguments_are_refused_outside_passthrough_commands():
    out = _feyntune("leaderboard", "--no-such-flag")
    assert out.returncode == 2 and "unrecognized arguments: --no-such-flag" in out.stderr
