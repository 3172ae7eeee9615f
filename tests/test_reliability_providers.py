"""Provider runs never hang silently and never lose what was paid for: a server asking for a
longer wait than allowed fails that request at once (and stalls no other), long waits are
announced, no wait exceeds max_wait, and Ctrl-C stops sending, keeps the answers of requests in
flight, and on a second press abandons them without a traceback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from fake_servers import FakeOpenAI, Fault, cached_prompts

from harness.ground.errors import FeynTuneError
from providers import runner
from providers.cache import CompletionCache
from providers.registry import create_provider
from providers.runner import Request, RunLimits, run_requests

KEY = "sk-reliability-test-0123456789"
PROMPTS = [f"Abstract {i}: we compute the one-loop beta function of a sigma model." for i in
           range(12)]


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    monkeypatch.setenv("FEYNTUNE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OPENAI_API_KEY", KEY)


def _run(server, prompts, limits, notify=None):
    provider = create_provider("openai", "gpt-test", base_url=server.base_url, timeout=5.0)
    requests = [Request(p, label=f"doc {i}") for i, p in enumerate(prompts)]
    extra = {"notify": notify} if notify else {}
    return run_requests(provider, requests, limits=limits, cache=CompletionCache(),
                        progress=False, **extra)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("concurrent", [1, 8])
def test_a_retry_after_beyond_max_wait_fails_that_request_and_stalls_no_other(concurrent):
    with FakeOpenAI() as server:
        server.inject(Fault(status=429, headers={"Retry-After": "3600"}))
        limits = RunLimits(num_concurrent=concurrent, backoff_initial=0.01, backoff_max=0.05)
        start = time.monotonic()
        with pytest.raises(FeynTuneError) as err:
            _run(server, PROMPTS, limits)
        elapsed = time.monotonic() - start
        assert len(server.requests) == 12  # the 429 is not retried
    message = str(err.value)
    assert "1 openai request(s) failed after retries" in message
    assert "gave up after 1 attempts" in message
    assert "the server asks to wait 3600 s, more than max_wait=120 s" in message
    assert "11 of 12 answers are stored" in message
    assert elapsed < 10  # before: the shared limiter stayed paused for the hour


@pytest.mark.timeout(60)
def test_a_retry_after_within_max_wait_but_past_the_retry_budget_is_not_taken():
    with FakeOpenAI() as server:
        server.inject(Fault(status=429, headers={"Retry-After": "90"}))
        limits = RunLimits(num_concurrent=2, max_retry_seconds=30, backoff_initial=0.01)
        start = time.monotonic()
        with pytest.raises(FeynTuneError, match=r"waiting 90 s more would pass "
                                                r"max_retry_time=30 s.*HTTP 429"):
            _run(server, PROMPTS[:4], limits)
        assert time.monotonic() - start < 10 and len(server.requests) == 4


@pytest.mark.timeout(60)
def test_max_wait_caps_the_back_off():
    with FakeOpenAI() as server:
        server.inject(Fault(status=500))
        limits = RunLimits(num_concurrent=1, backoff_initial=30, backoff_max=60, max_wait=0.2)
        start = time.monotonic()
        report = _run(server, PROMPTS[:1], limits)
        assert report.retries == 1 and report.outcomes[0].completion is not None
        assert time.monotonic() - start < 3  # not the 15-30 s of the first back-off step


def test_max_wait_must_leave_room_for_the_rpm_limit():
    with pytest.raises(FeynTuneError, match=r"rpm=0.25 spaces requests 240 s apart, more than "
                                            r"max_wait=120 s"):
        RunLimits(rpm=0.25)
    with pytest.raises(FeynTuneError, match="max_wait must be positive"):
        RunLimits(max_wait=0)
    assert RunLimits(rpm=0.25, max_wait=300).max_wait == 300


@pytest.mark.timeout(60)
def test_long_waits_are_announced_with_their_reason(monkeypatch):
    monkeypatch.setattr(runner, "ANNOUNCE_WAIT_S", 0.5)
    heard: list[str] = []
    with FakeOpenAI() as server:
        limits = RunLimits(num_concurrent=1, backoff_initial=0.01, backoff_max=0.05)
        server.inject(Fault(status=429, headers={"Retry-After": "1"}))
        _run(server, PROMPTS[:1], limits, notify=heard.append)
        server.inject(Fault(status=503, headers={"Retry-After": "1"}))
        _run(server, PROMPTS[1:2], limits, notify=heard.append)
        _run(server, PROMPTS[2:4], RunLimits(num_concurrent=1, rpm=60), notify=heard.append)
        _run(server, PROMPTS[4:5], RunLimits(num_concurrent=1, backoff_initial=0.01),
             notify=heard.append)  # short waits: nothing to say
    assert len(heard) == 3, heard
    assert heard[0] == ("openai: rate limited (HTTP 429, Retry-After 1 s): every request waits "
                        "1 s; then retry 1 of doc 0")
    assert heard[1].startswith("openai: waiting 1 s (Retry-After 1 s) before retry 1 of doc 0 "
                               "after: HTTP 503: ")
    assert heard[2] == "openai: waiting 1 s for the rpm limit"


@pytest.mark.timeout(60)
def test_announcements_go_to_stderr(monkeypatch, capsys):
    monkeypatch.setattr(runner, "ANNOUNCE_WAIT_S", 0.5)
    with FakeOpenAI() as server:
        server.inject(Fault(status=429, headers={"Retry-After": "1"}))
        _run(server, PROMPTS[:1], RunLimits(num_concurrent=1, backoff_initial=0.01))
    assert "openai: rate limited (HTTP 429, Retry-After 1 s)" in capsys.readouterr().err


def test_max_wait_is_a_model_arg():
    from providers.lm_eval_model import ProviderLM

    lm = ProviderLM(provider="openai", model="gpt-test", base_url="http://127.0.0.1:9/v1",
                    max_wait="45")
    assert lm.limits.max_wait == 45.0


# -- Ctrl-C ---------------------------------------------------------------------------------
# The child behaves as the `feyntune` CLI does: KeyboardInterrupt -> "interrupted", exit 130.
CHILD = textwrap.dedent("""
    import json, sys
    from providers.registry import create_provider
    from providers.runner import Request, RunLimits, run_requests
    base_url, prompts = sys.argv[1], json.loads(sys.argv[2])
    provider = create_provider("openai", "gpt-interrupt", base_url=base_url, timeout=30)
    try:
        run_requests(provider, [Request(p) for p in prompts],
                     limits=RunLimits(num_concurrent=3), progress=False)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
""")


def _wait_for(condition, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def _start(server, tmp_path: Path, n: int):
    """A child run of n requests, three at a time: 2 answers stored, the rest held in flight by
    the server."""
    home = tmp_path / "home"
    env = {**os.environ, "FEYNTUNE_HOME": str(home), "OPENAI_API_KEY": KEY,
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    err_path = tmp_path / "stderr.txt"
    server.hold_after(2)
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, server.base_url, json.dumps(PROMPTS[:n])],
        env=env, stdout=subprocess.DEVNULL, stderr=open(err_path, "w"))  # noqa: SIM115
    _wait_for(lambda: len(cached_prompts(home)) == 2 and len(server.requests) == min(n, 5))
    return proc, home, err_path


# 8 requests: 3 held in flight, 3 never sent; 4 requests: 2 in flight, one worker already
# done (its end must still be counted after the Ctrl-C).
@pytest.mark.timeout(90)
@pytest.mark.parametrize(("n", "flying"), [(8, 3), (4, 2)])
def test_first_ctrl_c_stops_sending_and_stores_the_answers_in_flight(tmp_path, n, flying):
    with FakeOpenAI() as server:
        proc, home, err_path = _start(server, tmp_path, n)
        try:
            proc.send_signal(signal.SIGINT)
            _wait_for(lambda: "Ctrl-C again abandons them" in err_path.read_text())
            time.sleep(0.3)
            assert len(server.requests) == 2 + flying  # nothing new was sent
            server.release()  # those in flight are answered now
            assert proc.wait(timeout=30) == 130
        finally:
            proc.kill()
        assert len(server.requests) == 2 + flying
        sent = set(server.prompts())
    err = err_path.read_text()
    assert f"Ctrl-C: no new requests are sent; waiting for the {flying} in flight" in err
    assert f"{2 + flying} of {n} answers are stored" in err
    assert "Traceback" not in err and "Exception ignored" not in err
    assert cached_prompts(home) == sent and len(sent) == 2 + flying  # every answer received


@pytest.mark.timeout(90)
def test_second_ctrl_c_abandons_the_requests_in_flight_without_a_traceback(tmp_path):
    with FakeOpenAI() as server:
        proc, home, err_path = _start(server, tmp_path, 8)
        try:
            proc.send_signal(signal.SIGINT)
            _wait_for(lambda: "Ctrl-C again abandons them" in err_path.read_text())
            proc.send_signal(signal.SIGINT)
            start = time.monotonic()
            assert proc.wait(timeout=20) == 130
            assert time.monotonic() - start < 5  # not the 30 s request timeout
        finally:
            proc.kill()
    err = err_path.read_text()
    assert "Ctrl-C again: abandoned 3 request(s) in flight" in err
    assert "Traceback" not in err and "Exception ignored" not in err
    assert len(cached_prompts(home)) == 2
