"""The block `feyntune reproduce` puts into lm-eval's --metadata, and reading it back.

lm-eval keeps --metadata in the results file (configs.<task>.metadata), so a run says which
study model its weights stand for (and with which settings: a run with another --limit or
--dtype is not the same run) without a file of our own beside it.
"""

from __future__ import annotations

STUDY_METADATA = "feyntune_study"


def study_marker(results: dict) -> dict | None:
    """The reproduce block recorded in one lm-eval results file, or None."""
    configs = results.get("configs") if isinstance(results.get("configs"), dict) else {}
    for config in configs.values():
        config = config if isinstance(config, dict) else {}
        metadata = config.get("metadata") if isinstance(config.get("metadata"), dict) else {}
        block = metadata.get(STUDY_METADATA)
        if isinstance(block, dict) and isinstance(block.get("study"), str):
            return block
    return None
