"""FeynTune harness: CLI, lm-eval glue, metrics and leaderboard."""

__version__ = "0.1.0"
