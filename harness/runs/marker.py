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


# The files whose bytes make an adapter what it is (PEFT writes one weights file of the two).
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")
DIGEST_CACHE = "adapter-digests.json"


def adapter_digest(source: str) -> str | None:
    """The sha256 of a local adapter's configuration and weights, so that a retrained adapter
    in the same folder is not taken for the one a finished run evaluated; None for a hub id
    (named by the hub, not read here). Cached in $FEYNTUNE_HOME by path, size and modification
    time, so an 8B adapter is hashed once, not at every plan."""
    import hashlib
    import json
    from pathlib import Path

    from harness.ground.digest import sha256_file
    from harness.ground.home import feyntune_home
    from harness.ground.jsonl import write_json

    folder = Path(source).expanduser()
    if not folder.is_dir():
        return None
    folder = folder.resolve()
    files = [folder / name for name in ADAPTER_FILES if (folder / name).is_file()]
    stamp = {path.name: [path.stat().st_size, path.stat().st_mtime_ns] for path in files}
    cache_path = feyntune_home() / DIGEST_CACHE
    try:
        cache = json.loads(cache_path.read_text(encoding="utf-8"))
        cache = cache if isinstance(cache, dict) else {}
    except (OSError, ValueError):
        cache = {}  # absent or damaged: recomputed (it holds only what can be recomputed)
    known = cache.get(str(folder))
    if isinstance(known, dict) and known.get("files") == stamp and known.get("sha256"):
        return known["sha256"]
    sha = hashlib.sha256()
    for path in files:
        sha.update(f"{path.name}\0{sha256_file(path)}\0".encode())
    digest = sha.hexdigest()
    cache[str(folder)] = {"files": stamp, "sha256": digest}
    try:
        write_json(cache_path, cache)
    except OSError:
        pass  # a read-only home: the digest is recomputed next time, nothing is lost
    return digest
