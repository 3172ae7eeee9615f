"""Fake command-line tools on PATH for tests (sbatch, srun, squeue, sinfo stand-ins), so the
real submitit code can write real submissions without a cluster."""

from __future__ import annotations

import os
from pathlib import Path


def put_on_path(tmp_path: Path, monkeypatch, scripts: dict[str, str]) -> Path:
    """Write each script (its text may name `{record}`, the folder the fakes write into) as an
    executable first on PATH; returns that record folder."""
    bin_dir, record = tmp_path / "bin", tmp_path / "record"
    bin_dir.mkdir()
    record.mkdir()
    for name, text in scripts.items():
        script = bin_dir / name
        script.write_text(text.format(record=record))
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return record
