"""harness.ground.digest.sha256_file against hashlib on the whole bytes at once."""

from __future__ import annotations

import hashlib

from harness.ground.digest import _CHUNK, sha256_file


def test_real_sample_and_chunk_edges(sample_path, tmp_path):
    assert sha256_file(sample_path) == hashlib.sha256(sample_path.read_bytes()).hexdigest()
    for size in (0, 1, _CHUNK, _CHUNK + 3):
        path = tmp_path / f"f{size}"
        data = bytes(i % 251 for i in range(size))
        path.write_bytes(data)
        assert sha256_file(path) == hashlib.sha256(data).hexdigest()
