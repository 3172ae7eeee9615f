"""The sha256 of a file, as the manifests (data build, training run) and pinned assets record it."""

from __future__ import annotations

import hashlib
import os

_CHUNK = 8 << 20  # large unbuffered reads: a 4.5 GB snapshot hashes at disk speed


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in chunks (never whole into memory)."""
    sha = hashlib.sha256()
    with open(path, "rb", buffering=0) as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            sha.update(chunk)
    return sha.hexdigest()
