"""providers/README.md "Adding a provider", done exactly as written: its code block saved as
`providers/mistral.py` is found by name and runs, with retries, cache and the lm-eval glue."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fake_servers import FakeOpenAI, Fault

import providers
from harness.ground.errors import FeynTuneError
from providers import registry
from providers.runner import Request, RunLimits, run_requests

README = Path(__file__).resolve().parents[1] / "providers" / "README.md"
KEY = "mistral-SECRET-key-0123456789"


def recipe_code() -> str:
    section = README.read_text().split("## Adding a provider", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 1, "the section shows exactly one code block"
    return blocks[0]


@pytest.fixture
def mistral_file(tmp_path, monkeypatch):
    """The block saved as providers/mistral.py (the package gains tmp_path as a second folder)."""
    folder = tmp_path / "extra_providers"
    folder.mkdir()
    (folder / "mistral.py").write_text(recipe_code())
    monkeypatch.setattr(providers, "__path__", [*providers.__path__, str(folder)])
    monkeypatch.setattr(registry, "_REGISTERED", dict(registry._REGISTERED))
    monkeypatch.setenv("FEYNTUNE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MISTRAL_API_KEY", KEY)
    yield folder
    import sys

    sys.modules.pop("providers.mistral", None)


def test_the_recipe_is_small():
    code = recipe_code()
    body = [line for line in code.splitlines() if line.strip()]
    assert len(body) <= 50
    assert code.count("@register_provider(") == 1


def test_recipe_provider_runs_with_the_shared_machinery(mistral_file):
    with FakeOpenAI() as server:
        server.inject(Fault(status=429, headers={"Retry-After": "0.2"}), Fault(drop=True))
        provider = registry.create_provider("mistral", "mistral-small", base_url=server.base_url)
        assert type(provider).__module__ == "providers.mistral" and provider.name == "mistral"
        prompts = ["Holography in three dimensions.", "Anomalies of sigma models."]
        limits = RunLimits(num_concurrent=1, backoff_initial=0.01)
        report = run_requests(provider, [Request(p) for p in prompts], limits=limits,
                              progress=False)
        assert [o.completion.text for o in report.outcomes] == [
            f"continuation of <{p[:24]}> with a result." for p in prompts]
        assert report.retries == 2 and report.usage_run.input_tokens > 0
        headers = {k.lower(): v for k, v in server.requests[0]["headers"].items()}
        assert headers["authorization"] == f"Bearer {KEY}"
        assert run_requests(provider, [Request(p) for p in prompts], progress=False).cached == 2

        server.inject(Fault(status=401, message=f"bad key {KEY}"))
        with pytest.raises(FeynTuneError, match="authentication failed for mistral") as err:
            run_requests(provider, [Request("new prompt.")], limits=limits, progress=False)
        assert KEY not in str(err.value)


def test_recipe_provider_through_the_lm_eval_glue(mistral_file):
    from lm_eval.api.instance import Instance

    from providers.lm_eval_model import ProviderLM

    with FakeOpenAI() as server:
        lm = ProviderLM(provider="mistral", model="mistral-small", base_url=server.base_url)
        inst = Instance(request_type="generate_until", doc={},
                        arguments=("Twistors and amplitudes.", {"until": [], "max_gen_toks": 32}),
                        idx=0, metadata=("hepth_completion_gen", 0, 1))
        assert lm.generate_until([inst]) == ["continuation of <Twistors and amplitudes.> with a result."]
        assert server.requests[0]["body"]["max_tokens"] == 32
        assert lm.get_model_info()["provider_run"]["provider"] == "mistral"


def test_missing_recipe_key_fails_fast(mistral_file, monkeypatch):
    monkeypatch.delenv("MISTRAL_API_KEY")
    with pytest.raises(FeynTuneError, match=r"set \$MISTRAL_API_KEY"):
        registry.create_provider("mistral", "mistral-small")
