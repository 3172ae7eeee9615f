"""`--model provider` inside lm-eval: the ProviderLM glue, and whole `feyntune eval` runs against
loopback servers (each provider, re-run from the cache, the key in no file, a missing key)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
from fake_servers import SERVERS, FakeOpenAI, Fault, provider_env

from harness.ground.errors import FeynTuneError
from providers.instruction import CURRENT

KEYS = {
    "openai": ("OPENAI_API_KEY", "sk-proj-SECRET-eval-0123456789abcdefXYZ"),
    "anthropic": ("ANTHROPIC_API_KEY", "sk-ant-SECRET-eval-0123456789abcdef"),
    "gemini": ("GEMINI_API_KEY", "AIzaSECRET-eval-0123456789abcdef"),
}
N_DOCS = 3


@pytest.fixture
def env(monkeypatch, tmp_path, minilm_path):
    provider_env(monkeypatch, tmp_path, minilm_path, KEYS)
    return tmp_path


@pytest.fixture
def docs(sample_path, tmp_path) -> Path:
    """The first hep-th records of the real sample, as the task's JSON-lines input."""
    rows = [json.loads(line) for line in sample_path.read_text().splitlines() if line.strip()]
    hepth = [r for r in rows if r["categories"].split()[0] == "hep-th"][: N_DOCS + 1]
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in hepth))
    return path


def _answer(prompt: str) -> str:
    # A model that repeats the prompt first: the glue must strip it.
    return f"{prompt} We find that the spectrum is discrete."


def feyntune_eval(server, provider: str, docs: Path, out: Path, *extra: str) -> int:
    from harness.cli import main

    model_args = (f"provider={provider},model={provider}-fake,base_url={server.base_url},"
                  "num_concurrent=4,backoff_initial=0.01,max_retries=3")
    return main(["eval", "--model", "provider", "--model_args", model_args,
                 "--tasks", "hepth_completion_gen", "--limit", str(N_DOCS),
                 "--metadata", json.dumps({"hepth_data": str(docs)}),
                 "--output_path", str(out), *extra])


def _written(out: Path) -> tuple[dict, list[dict]]:
    results = json.loads(max(out.rglob("results_*.json")).read_text())
    samples_file = max(out.rglob("samples_hepth_completion_gen_*.jsonl"))
    return results, [json.loads(x) for x in samples_file.read_text().splitlines() if x.strip()]


def _files_containing(root: Path, needle: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


@pytest.mark.slow
@pytest.mark.parametrize("provider", sorted(SERVERS))
def test_feyntune_eval_each_provider(env, docs, provider, capsys, caplog):
    """Results in lm-eval's format, retried faults that echo the key, and the key nowhere."""
    _, key = KEYS[provider]
    out = env / "out"
    caplog.set_level(logging.DEBUG)  # the SDKs' own debug logging included
    with SERVERS[provider](answer=_answer) as server:
        # errors that echo the key, as real services do: retried, logged, then answered
        server.inject(Fault(status=500, message=f"upstream failed for key {key}"),
                      Fault(status=429, message=f"rate limit for {key}",
                            headers={"retry-after-ms": "10"}))
        assert feyntune_eval(server, provider, docs, out) == 0
        prompts = server.prompts()
        assert len(prompts) == N_DOCS + 2
        assert key in " ".join(server.requests[0]["headers"].values())  # sent, as a header
        results, samples = _written(out)
        run = results["config"]["provider_run"]
        assert run["instruction"] == CURRENT.as_dict()
        assert run["provider"] == provider and run["model"] == f"{provider}-fake"
        assert run["runs"][0]["sent"] == N_DOCS and run["runs"][0]["retries"] == 2
        assert run["runs"][0]["usage_this_run"]["input_tokens"] > 0
        metrics = {m.split(",")[0] for m in results["results"]["hepth_completion_gen"]}
        assert {"semscore", "semscore_full", "word_entropy", "repetition"} <= metrics
        for sample in samples:
            assert sample["doc"]["prompt"] in prompts  # the task's prompt is the user message
            # the repeated prompt was stripped: only the continuation is scored
            assert sample["resps"] == [["We find that the spectrum is discrete."]]
            assert 0.0 < sample["word_entropy"]
        captured = capsys.readouterr()
        assert "3 requests, 3 sent, 0 from cache, 2 retries" in captured.err
        assert "retry 1 of hepth_completion_gen doc" in caplog.text  # retries are logged ...
        for text in (captured.out, captured.err, caplog.text):
            assert key not in text  # ... without the key
        assert _files_containing(env, key) == []  # results, samples, cache: no key

        if provider == "openai":  # a re-run is answered by the cache alone
            assert feyntune_eval(server, provider, docs, env / "out2") == 0
            assert len(server.requests) == N_DOCS + 2
            assert "3 requests, 0 sent, 3 from cache" in capsys.readouterr().err
            _, again = _written(env / "out2")
            assert [s["resps"] for s in again] == [s["resps"] for s in samples]


@pytest.mark.slow
def test_bad_key_stops_feyntune_eval_with_a_scrubbed_message(env, docs, capsys, caplog):
    _, key = KEYS["openai"]
    caplog.set_level(logging.DEBUG)
    with FakeOpenAI() as server:
        server.inject(*[Fault(status=401, message=f"Incorrect API key provided: {key}")] * 8)
        assert feyntune_eval(server, "openai", docs, env / "out") == 2
        assert len(server.requests) <= 4  # stopped at once, not retried
    captured = capsys.readouterr()
    assert "authentication failed for openai ($OPENAI_API_KEY)" in captured.err
    assert "[REDACTED]" in captured.err
    for text in (captured.out, captured.err, caplog.text):
        assert key not in text
    assert _files_containing(env, key) == []


@pytest.mark.slow
def test_missing_key_fails_before_any_request(env, docs, monkeypatch, capsys):
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    with SERVERS["anthropic"]() as server:
        start = time.monotonic()
        assert feyntune_eval(server, "anthropic", docs, env / "out") == 2
        assert server.requests == []
    assert "no API key for provider 'anthropic': set $ANTHROPIC_API_KEY" in capsys.readouterr().err
    assert time.monotonic() - start < 60
    assert not (env / "out").exists() or not list((env / "out").rglob("results_*.json"))


# -- the glue without a whole lm-eval run ------------------------------------------------------

def _instances(contexts, gen_kwargs, repeats=1):
    from lm_eval.api.instance import Instance

    items = []
    for i, context in enumerate(contexts):
        inst = Instance(request_type="generate_until", doc={}, arguments=(context, gen_kwargs),
                        idx=0, metadata=("hepth_completion_gen", i, repeats))
        items.extend([inst] * repeats)  # how lm-eval's evaluator clones repeats
    return items


def _lm(server, **args):
    from providers.lm_eval_model import ProviderLM

    return ProviderLM(provider="openai", model="gpt-test", base_url=server.base_url,
                      backoff_initial=0.01, batch_size=1, device="cpu", **args)


def test_generate_until_repeats_stops_and_greedy(env):
    contexts = ["Strings on a circle.", "Branes in a box."]
    with FakeOpenAI(answer=lambda p: f"{p} First part.\n\nSecond part.") as server:
        lm = _lm(server)
        kwargs = {"until": ["\n\n"], "do_sample": False, "max_gen_toks": 64}
        texts = lm.generate_until(_instances(contexts, kwargs, repeats=2))
        assert texts == ["First part."] * 4  # prompt stripped, cut at the stop
        assert len(server.requests) == 4  # 2 samples per prompt, each sent
        body = server.requests[0]["body"]
        assert body["temperature"] == 0.0 and body["max_completion_tokens"] == 64
        assert body["stop"] == ["\n\n"]
        assert lm.generate_until(_instances(contexts, kwargs, repeats=2)) == texts
        assert len(server.requests) == 4  # all four from the cache
        info = lm.get_model_info()["provider_run"]
        assert info["instruction"]["version"] == CURRENT.version
        assert info["runs"][-1]["from_cache"] == 4


def test_document_error_scored_empty_and_recorded(env):
    with FakeOpenAI() as server:
        server.inject(Fault(status=400, message="This prompt violates our content_policy"))
        lm = _lm(server, num_concurrent=1)
        texts = lm.generate_until(_instances(["A.", "B."], {"until": []}))
        assert texts[0] == "" and texts[1].startswith("continuation of")
        errors = lm.get_model_info()["provider_run"]["document_errors"]
        assert errors == [{"request": "hepth_completion_gen doc 0",
                           "error": "HTTP 400: This prompt violates our content_policy"}]


def test_glue_rejects_what_it_cannot_do(env):
    with FakeOpenAI() as server:
        lm = _lm(server)
        with pytest.raises(FeynTuneError, match="API models run only --tasks hepth_completion_gen"):
            lm.loglikelihood([])
        with pytest.raises(FeynTuneError, match="no log-likelihoods"):
            lm.loglikelihood_rolling([])
        with pytest.raises(FeynTuneError, match=r"generation kwargs \['top_k'\]"):
            lm.generate_until(_instances(["A."], {"top_k": 5}))
        with pytest.raises(FeynTuneError, match="drop --apply_chat_template"):
            lm.apply_chat_template([{"role": "user", "content": "A."}])
        with pytest.raises(FeynTuneError, match=r"unknown model_args .*\['api_key'\]"):
            _lm(server, api_key="sk-oops")
    from providers.lm_eval_model import ProviderLM

    with pytest.raises(FeynTuneError, match="needs --model_args provider=NAME,model=MODEL"):
        ProviderLM(provider="openai")


def test_registered_in_lm_eval_beside_the_builtin_models():
    from lm_eval.api.registry import get_model

    import providers.lm_eval_model as glue

    assert get_model("provider") is glue.ProviderLM
    assert get_model("hf").__name__ == "HFLM"
