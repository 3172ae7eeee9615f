"""`feyntune`: one command for the pipeline curate -> train -> evaluate -> leaderboard.

Each subcommand lives in the module that does the work and adds itself with `register(sub)`;
those modules import heavy libraries (torch, transformers) inside functions so `--help` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from harness.ground.errors import FeynTuneError
from harness.ground.version import __version__

# Order is the pipeline's order, as shown by `feyntune --help`.
COMMAND_MODULES = [
    "harness.assets",       # assets fetch|path|list
    "finetune.curate",      # data build
    "finetune.train",       # train
    "finetune.merge",       # merge
    "harness.evaluate.command",     # eval
    "harness.study.reproduce",    # reproduce
    "harness.study.command",      # study run|plan|status
    "harness.leaderboard.command",  # leaderboard
    "harness.review.command",       # review build|import
    "harness.judge.command",        # judge [agreement]
    "harness.demo",         # demo
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="feyntune",
        description="Fine-tune open LLMs on hep-th arXiv abstracts and benchmark them "
        "against their base model and commercial LLMs.",
    )
    parser.add_argument("--version", action="version", version=f"feyntune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # Only commands that wrap another CLI (eval -> lm_eval) accept arguments they do not declare.
    if extra and not getattr(args, "passthrough", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    try:
        return int(args.func(args) or 0)
    except FeynTuneError as err:
        print(f"feyntune {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"feyntune {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
