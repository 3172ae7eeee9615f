"""Model names as tables and plans show them."""

from __future__ import annotations


def short_name(name: str) -> str:
    """A hub id's model part or a folder's name: "meta-llama/Llama-3.1-8B" -> "Llama-3.1-8B"."""
    return name.rstrip("/").rsplit("/", 1)[-1] or name
