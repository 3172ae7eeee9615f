"""Providers through the real SDK clients against loopback servers speaking each wire format:
happy paths, injected faults, retries and their bounds, fatal and per-document errors, the
cache, rate limits, the key's absence from every message, and the small pure helpers."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from fake_servers import SERVERS, FakeOpenAI, Fault

from harness.ground.errors import FeynTuneError
from providers import pricing
from providers.base import GenerationSettings, retry_after_seconds
from providers.cache import CompletionCache
from providers.instruction import CURRENT, strip_repeated_prompt
from providers.registry import create_provider, get_provider_class, provider_names
from providers.runner import Request, RunLimits, run_requests

KEYS = {
    "OPENAI_API_KEY": "sk-test-openai-0123456789abcdef",
    "ANTHROPIC_API_KEY": "sk-ant-test-0123456789abcdef",
    "GEMINI_API_KEY": "AIza-test-gemini-0123456789",
    "DEEPSEEK_API_KEY": "sk-test-deepseek-0123456789",
}
# provider name -> fake server kind
WIRE = {"openai": "openai", "anthropic": "anthropic", "gemini": "gemini",
        "deepseek": "openai", "openai-compatible": "openai"}
FAST = RunLimits(num_concurrent=4, max_retries=3, backoff_initial=0.01, backoff_max=0.05)
PROMPTS = [f"We study the {w} sector of a gauge theory. It is anomalous." for w in
           ("scalar", "fermion", "gauge", "gravity", "moduli", "axion")]


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    monkeypatch.setenv("FEYNTUNE_HOME", str(tmp_path / "home"))
    for name in ("GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI"):
        monkeypatch.delenv(name, raising=False)
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)


def _provider(name: str, server, **options):
    return create_provider(name, f"{name}-test-model", base_url=server.base_url,
                           timeout=options.pop("timeout", 5.0), **options)


def _run(provider, prompts=PROMPTS, limits=FAST, settings=None, cache=None):
    settings = settings or GenerationSettings()
    requests = [Request(p, settings, 0, f"doc {i}") for i, p in enumerate(prompts)]
    return run_requests(provider, requests, limits=limits, cache=cache or CompletionCache(),
                        progress=False)


def _answer(prompt: str) -> str:
    return f"continuation of <{prompt[:24]}> with a result."


@pytest.mark.parametrize("name", sorted(WIRE))
def test_happy_path_each_provider(name):
    with SERVERS[WIRE[name]]() as server:
        report = _run(_provider(name, server))
        texts = [o.completion.text for o in report.outcomes]
        assert texts == [_answer(p) for p in PROMPTS]  # in request order
        assert report.sent == len(PROMPTS) and report.cached == 0 and report.retries == 0
        assert sorted(server.prompts()) == sorted(PROMPTS)
        assert report.usage_run.input_tokens == sum(len(p.split()) + 40 for p in PROMPTS)
        assert report.usage_run.output_tokens == sum(len(t.split()) for t in texts)
        body = server.requests[0]["body"]
        headers = {k.lower(): v for k, v in server.requests[0]["headers"].items()}
    if WIRE[name] == "openai":
        assert body["messages"][0] == {"role": "system", "content": CURRENT.text}
        assert body["temperature"] == 0.8
        field = "max_completion_tokens" if name == "openai" else "max_tokens"
        assert body[field] == 1024
    elif name == "anthropic":
        assert body["system"] == CURRENT.text and body["max_tokens"] == 1024
        assert "temperature" not in body  # the API rejects it (see anthropic_provider.py)
    else:
        assert body["systemInstruction"]["parts"][0]["text"] == CURRENT.text
        assert body["generationConfig"] == {"temperature": 0.8, "maxOutputTokens": 1024}
    key_env = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY",
               "gemini": "GEMINI_API_KEY", "deepseek": "DEEPSEEK_API_KEY"}.get(name)
    if key_env:
        assert KEYS[key_env] in " ".join(headers.values())  # the key was sent, as a header


FAULTS = {
    "429_retry_after": Fault(status=429, headers={"Retry-After": "1"}),
    "500": Fault(status=500),
    "slow": Fault(delay=1.5),
    "malformed_json": Fault(malformed=True),
    "dropped_connection": Fault(drop=True),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize("kind", sorted(SERVERS))
def test_faults_are_retried(kind, fault):
    with SERVERS[kind]() as server:
        server.inject(FAULTS[fault])
        provider = _provider(kind, server, timeout=0.5)
        start = time.monotonic()
        report = _run(provider, PROMPTS[:1], limits=FAST)
        elapsed = time.monotonic() - start
        assert report.outcomes[0].completion.text == _answer(PROMPTS[0])
        assert report.retries == 1 and report.outcomes[0].attempts == 2
        assert len(server.requests) == 2
    if fault == "429_retry_after":
        assert elapsed >= 1.0  # Retry-After honoured although the back-off is 10-50 ms
    else:
        assert elapsed < 1.4


def test_retries_are_bounded_in_count_and_answered_work_is_kept():
    with FakeOpenAI() as server:
        server.inject(*[Fault(status=503)] * 3)  # the first request fails three times
        provider = _provider("openai", server)
        limits = RunLimits(num_concurrent=1, max_retries=2, backoff_initial=0.01)
        with pytest.raises(FeynTuneError, match=r"1 openai request\(s\) failed after retries"
                           r".*doc 0.*gave up after 3 attempts.*HTTP 503") as err:
            _run(provider, PROMPTS[:3], limits=limits)
        assert "5 of" not in str(err.value) and "2 of 3 answers are stored" in str(err.value)
        assert len(server.requests) == 5  # 3 attempts + the two other documents
        again = _run(provider, PROMPTS[:3], limits=limits)  # only the missing one is sent
        assert len(server.requests) == 6 and again.sent == 1 and again.cached == 2


def test_retry_after_longer_than_the_time_bound_gives_up_at_once():
    with FakeOpenAI() as server:
        server.inject(Fault(status=429, headers={"Retry-After": "30"}))
        limits = RunLimits(num_concurrent=1, max_retry_seconds=5, backoff_initial=0.01)
        start = time.monotonic()
        with pytest.raises(FeynTuneError, match="gave up after 1 attempts"):
            _run(_provider("openai", server), PROMPTS[:1], limits=limits)
        assert time.monotonic() - start < 2


def test_bad_key_stops_the_run_with_a_scrubbed_message():
    key = KEYS["ANTHROPIC_API_KEY"]
    with SERVERS["anthropic"]() as server:
        server.inject(*[Fault(status=401, message=f"invalid x-api-key {key}")] * 40)
        with pytest.raises(FeynTuneError) as err:
            _run(_provider("anthropic", server), PROMPTS * 5,
                 limits=RunLimits(num_concurrent=2, backoff_initial=0.01))
        assert len(server.requests) <= 3  # stopped, not 30 doomed requests
    message = str(err.value)
    assert "authentication failed for anthropic ($ANTHROPIC_API_KEY)" in message
    assert key not in message and "[REDACTED]" in message
    assert err.value.__cause__ is None and err.value.__context__ is None


def test_unknown_model_is_fatal():
    with SERVERS["gemini"]() as server:
        server.inject(Fault(status=404, message="models/nope is not found"))
        with pytest.raises(FeynTuneError, match="gemini does not know model 'gemini-test-model'"):
            _run(_provider("gemini", server), PROMPTS[:1])
        assert len(server.requests) == 1


def test_refused_content_is_recorded_for_that_document_only():
    with FakeOpenAI() as server:
        server.inject(Fault(status=400, message="flagged by our content_policy"))
        report = _run(_provider("openai", server), PROMPTS[:3],
                      limits=RunLimits(num_concurrent=1))
    kinds = [o.kind for o in report.outcomes]
    assert kinds == ["document_error", "ok", "ok"]
    assert report.document_errors(["a", "b", "c"]) == [
        {"request": "a", "error": "HTTP 400: flagged by our content_policy"}]
    assert report.summary()["document_errors"] == 1


def test_service_down_stops_after_consecutive_failures():
    with FakeOpenAI() as server:
        server.inject(*[Fault(status=500)] * 100)
        limits = RunLimits(num_concurrent=1, max_retries=1, backoff_initial=0.001,
                           max_consecutive_failures=3)
        with pytest.raises(FeynTuneError, match="3 requests in a row failed after retries"):
            _run(_provider("openai", server), PROMPTS, limits=limits)
        assert len(server.requests) == 6  # 3 documents x 2 attempts, then stop


@pytest.mark.parametrize("name, env", [("openai", "OPENAI_API_KEY"),
                                       ("anthropic", "ANTHROPIC_API_KEY"),
                                       ("deepseek", "DEEPSEEK_API_KEY")])
def test_missing_key_fails_before_any_request(monkeypatch, name, env):
    monkeypatch.delenv(env)
    with SERVERS[WIRE[name]]() as server:
        with pytest.raises(FeynTuneError, match=rf"no API key for provider '{name}': set \${env}"):
            _provider(name, server)
        assert server.requests == []


def test_gemini_key_from_either_variable_and_api_key_env(monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY")
    with pytest.raises(FeynTuneError, match=r"\$GEMINI_API_KEY or \$GOOGLE_API_KEY"):
        create_provider("gemini", "g")
    monkeypatch.setenv("GOOGLE_API_KEY", "AIza-google-123456")
    with SERVERS["gemini"]() as server:
        _run(_provider("gemini", server), PROMPTS[:1])
        assert server.requests[0]["headers"]["x-goog-api-key"] == "AIza-google-123456"
    with pytest.raises(FeynTuneError, match=r"set \$MY_VLLM_KEY"):
        create_provider("openai-compatible", "m", base_url="http://x/v1", api_key_env="MY_VLLM_KEY")


def test_openai_compatible_needs_base_url_and_no_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(FeynTuneError, match="needs base_url"):
        create_provider("openai_compatible", "m")
    with FakeOpenAI() as server:
        provider = _provider("openai-compatible", server)
        assert provider.identity()["base_url"] == server.base_url
        assert _run(provider, PROMPTS[:1]).sent == 1


def test_unknown_provider_lists_the_known_ones():
    with pytest.raises(FeynTuneError, match="unknown provider 'nope'; known: anthropic, deepseek"):
        get_provider_class("nope")
    assert {"openai", "anthropic", "gemini", "deepseek", "openai-compatible"} <= set(
        provider_names())


def test_cache_answers_repeat_runs_and_keys_on_settings_sample_and_instruction():
    with FakeOpenAI() as server:
        provider = _provider("openai", server)
        cache = CompletionCache()
        first = _run(provider, PROMPTS, cache=cache)
        second = _run(provider, PROMPTS, cache=cache)
        assert len(server.requests) == len(PROMPTS)
        assert second.sent == 0 and second.cached == len(PROMPTS)
        assert [o.completion for o in second.outcomes] == [o.completion for o in first.outcomes]
        assert second.usage_run.requests == 0
        assert second.usage_all.input_tokens == first.usage_run.input_tokens
        _run(provider, PROMPTS[:2], settings=GenerationSettings(temperature=0.5), cache=cache)
        assert len(server.requests) == len(PROMPTS) + 2
        resampled = [Request(PROMPTS[0], GenerationSettings(), k) for k in range(3)]
        report = run_requests(provider, resampled, limits=FAST, cache=cache, progress=False)
        assert report.cached == 1 and report.sent == 2  # sample 0 was cached, 1 and 2 are new
        other = create_provider("openai", "another-model", base_url=server.base_url)
        assert _run(other, PROMPTS[:1], cache=cache).sent == 1
    assert cache.path == Path(os.environ["FEYNTUNE_HOME"]) / "providers" / "cache.sqlite"


def test_rpm_limit_spaces_requests():
    prompts = [f"prompt number {i}." for i in range(30)]
    with FakeOpenAI() as server:
        provider = _provider("openai", server)
        start = time.monotonic()
        _run(provider, prompts, limits=RunLimits(num_concurrent=8, rpm=1200))
        limited = time.monotonic() - start
    # 1200/min = 20/s with a one-second burst of 20: the last 10 wait about 0.5 s.
    assert 0.4 <= limited < 3


def test_tpm_limit_counts_tokens():
    prompts = [f"prompt number {i}." for i in range(6)]
    with FakeOpenAI() as server:
        provider = _provider("openai", server)
        settings = GenerationSettings(max_tokens=100)
        start = time.monotonic()
        # each request reserves ~100 + ~90 tokens and is settled to ~55 after its answer;
        # 12000/min = 200/s in a bucket of 200 tokens: six requests need about 0.7 s
        _run(provider, prompts, settings=settings, limits=RunLimits(num_concurrent=6, tpm=12000))
        assert time.monotonic() - start >= 0.4


def test_strip_repeated_prompt():
    prompt = "We compute the  entropy.\nIt grows."
    assert strip_repeated_prompt(prompt, "We compute the entropy. It grows. Then it stops.") == \
        "Then it stops."
    assert strip_repeated_prompt(prompt, "  We compute the entropy.\n It grows.\n\nThen.") == "Then."
    assert strip_repeated_prompt(prompt, "Then it stops.") == "Then it stops."
    assert strip_repeated_prompt(prompt, "We compute the entropy. It") == \
        "We compute the entropy. It"  # shorter than the prompt: left alone
    assert strip_repeated_prompt(prompt, "We computethe entropy. It grows. X") == \
        "We computethe entropy. It grows. X"


def test_retry_after_header_forms():
    assert retry_after_seconds({"Retry-After": "7"}) == 7.0
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 27 <= retry_after_seconds({"Retry-After": when}) <= 31
    assert retry_after_seconds({"Retry-After": "soon"}) is None
    assert retry_after_seconds({}) is None


def test_gemini_retry_delay_from_the_error_body():
    from providers.gemini import _retry_delay

    body = {"error": {"code": 429, "details": [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"}]}}
    assert _retry_delay(body) == 17.0 and _retry_delay({}) is None


def test_prices_from_the_table():
    assert pricing.find_price("openai", "gpt-4o-mini-2024-07-18").entry == "gpt-4o-mini"
    assert pricing.find_price("openai", "gpt-4o-2024-08-06").entry == "gpt-4o"
    est = pricing.estimate("anthropic", "claude-sonnet-4-5", 1_000_000, 100_000)
    assert est["usd"] == pytest.approx(3.00 + 1.50)
    assert pricing.estimate("openai-compatible", "llama", 10, 10)["usd"] is None


def test_settings_validation():
    with pytest.raises(FeynTuneError):
        GenerationSettings(max_tokens=0)
    assert GenerationSettings(stop=("", "\n\n")).stop == ("\n\n",)
    with pytest.raises(FeynTuneError):
        RunLimits(num_concurrent=0)
