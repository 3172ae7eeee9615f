"""The batch route (`batch=true`) against loopback servers that speak each batch API, driven
through the official SDKs; and the budget (`max_cost`) on both routes."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from fake_batch_servers import BATCH_SERVERS, BatchOpenAI
from fake_servers import FakeOpenAI, cached_prompts, provider_env

from harness.ground.errors import FeynTuneError
from providers import pricing
from providers.base import Completion, GenerationSettings, Usage
from providers.batch import BatchOptions, run_batch
from providers.budget import Budget, input_token_bound
from providers.instruction import CURRENT
from providers.registry import create_provider
from providers.runner import Request, RunLimits, run_requests

KEYS = {"openai": ("OPENAI_API_KEY", "sk-proj-batch-0123456789"),
        "anthropic": ("ANTHROPIC_API_KEY", "sk-ant-batch-0123456789"),
        "gemini": ("GEMINI_API_KEY", "AIza-batch-0123456789")}
MODELS = {"openai": "gpt-4o", "anthropic": "claude-sonnet-4-5", "gemini": "gemini-2.5-flash"}
FAST = BatchOptions(batch=True, poll_initial=0.02, poll_max=0.05)
N_DOCS = 20
PROMPTS = [f"Abstract {i}: we study the moduli space of a D-brane on a conifold." for i in range(8)]


@pytest.fixture
def env(monkeypatch, tmp_path, minilm_path):
    provider_env(monkeypatch, tmp_path, minilm_path, KEYS)
    return tmp_path


def _provider(name: str, server):
    return create_provider(name, MODELS[name], base_url=server.base_url, timeout=30)


def _requests(prompts=PROMPTS, max_tokens=64):
    return [Request(p, GenerationSettings(max_tokens=max_tokens), 0, f"doc {i}")
            for i, p in enumerate(prompts)]


# -- the whole task, direct and batch: the same samples file ---------------------------------

@pytest.fixture
def docs(sample_path, tmp_path) -> Path:
    rows = [json.loads(line) for line in sample_path.read_text().splitlines() if line.strip()]
    hepth = [r for r in rows if r["categories"].split()[0] == "hep-th"][: N_DOCS + 1]
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in hepth))
    return path


def _eval(server, provider: str, docs: Path, out: Path, extra: str = "") -> int:
    from harness.cli import main

    model_args = (f"provider={provider},model={MODELS[provider]},base_url={server.base_url},"
                  f"backoff_initial=0.01{extra}")
    return main(["eval", "--model", "provider", "--model_args", model_args,
                 "--tasks", "hepth_completion_gen", "--limit", str(N_DOCS),
                 "--metadata", json.dumps({"hepth_data": str(docs)}),
                 "--output_path", str(out)])


def _samples(out: Path) -> list[dict]:
    path = max(out.rglob("samples_hepth_completion_gen_*.jsonl"))
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.mark.slow
@pytest.mark.parametrize("provider", sorted(BATCH_SERVERS))
def test_batch_run_gives_the_direct_runs_samples(env, docs, provider, monkeypatch, capsys):
    server_class = BATCH_SERVERS[provider]
    with server_class() as server:
        assert _eval(server, provider, docs, env / "direct") == 0
        direct_requests = len(server.requests)
        assert direct_requests == N_DOCS and server.creations == 0
    monkeypatch.setenv("FEYNTUNE_HOME", str(env / "home-batch"))  # nothing cached
    with server_class() as server:
        assert _eval(server, provider, docs, env / "batch",
                     ",batch=true,batch_poll=0.02,max_cost=5") == 0
        assert server.creations == 1 and server.polls >= 1
        assert server.requests == []  # nothing through the direct route
    err = capsys.readouterr().err
    assert f"worst case of {N_DOCS} request(s) (batch)" in err and "max_cost=$5" in err
    assert f"batch API: {N_DOCS} of this run's answers" in err
    direct, batch = _samples(env / "direct"), _samples(env / "batch")
    assert len(batch) == N_DOCS
    assert batch == direct  # the same file, line for line
    results = json.loads(max((env / "batch").rglob("results_*.json")).read_text())
    run = results["config"]["provider_run"]["runs"][0]
    assert run["usage_this_run"]["batch_requests"] == N_DOCS
    assert run["batch"]["failed_in_batch"] == 0 and len(run["batch"]["batches"]) == 1
    # half the direct price: the same tokens at the batch rates
    price = pricing.find_price(provider, MODELS[provider])
    usage = run["usage_this_run"]
    assert run["cost_this_run"]["usd"] == pytest.approx(
        price.cost(usage["input_tokens"], usage["output_tokens"]) / 2, abs=2e-6)
    # the leaderboard shows each row's tokens, cost and route
    from harness.cli import main

    rows = {}
    for route in ("direct", "batch"):
        assert main(["leaderboard", "--runs", str(env / route), "--out",
                     str(env / f"board-{route}")]) == 0
        with open(env / f"board-{route}" / "leaderboard.csv", newline="") as handle:
            rows[route] = next(r for r in csv.DictReader(handle) if r["source"] == "measured")
        assert rows[route]["api_route"] == route
        assert f"({route}; " in (env / f"board-{route}" / "leaderboard.md").read_text()
    assert rows["batch"]["api_input_tokens"] == str(usage["input_tokens"])
    assert float(rows["batch"]["api_cost_usd"]) == pytest.approx(
        float(rows["direct"]["api_cost_usd"]) / 2, abs=2e-6)


# -- the route on its own ----------------------------------------------------------------------

@pytest.mark.parametrize("provider", sorted(BATCH_SERVERS))
def test_failures_inside_a_batch_are_counted_and_sent_again(env, provider):
    with BATCH_SERVERS[provider]() as server:
        server.fail_in_next_batch(3)
        heard: list[str] = []
        report = run_batch(_provider(provider, server), _requests(), options=FAST,
                           progress=False, notify=heard.append)
        assert server.creations == 2  # the three failed ones went out again, in a new batch
        assert [len(b["results"]) for b in server.batches.values()] == [len(PROMPTS), 3]
    assert all(o.kind == "ok" and o.completion.batch for o in report.outcomes)
    assert report.batch["failed_in_batch"] == 3 and report.batch["resubmitted"] == 3
    assert any(f"{len(PROMPTS) - 3} answered, 0 document error(s), 3 failed" in h for h in heard)
    assert any("3 request(s) failed in the batch; sending them again in a new batch" in h
               for h in heard)
    assert cached_prompts(env / "home") == set(PROMPTS)


@pytest.mark.parametrize("provider", sorted(BATCH_SERVERS))
def test_an_expired_batch_is_reported_and_sent_again(env, provider):
    with BATCH_SERVERS[provider]() as server:
        server.expire_next_batch()
        heard: list[str] = []
        report = run_batch(_provider(provider, server), _requests(), options=FAST,
                           progress=False, notify=heard.append)
        assert server.creations == 2
    assert report.batch["failed_in_batch"] == len(PROMPTS)
    assert all(o.kind == "ok" for o in report.outcomes)
    ended = next(h for h in heard if "0 answered" in h)
    assert f"{len(PROMPTS)} failed" in ended and ("expired" in ended or "EXPIRED" in ended)


def test_failures_can_be_sent_directly_instead(env):
    with BatchOpenAI() as server:
        server.fail_in_next_batch(2)
        options = BatchOptions(batch=True, poll_initial=0.02, poll_max=0.05, resend="direct")
        report = run_batch(_provider("openai", server), _requests(), options=options,
                           progress=False, notify=lambda _: None)
        assert server.creations == 1 and len(server.requests) == 2  # two direct requests
    assert report.batch["resent_direct"] == 2 and report.sent == len(PROMPTS)
    assert sum(o.completion.batch for o in report.outcomes) == len(PROMPTS) - 2


def test_failures_that_keep_failing_are_reported_not_dropped(env):
    with BatchOpenAI() as server:
        server.fail_in_next_batch(2)
        options = BatchOptions(batch=True, poll_initial=0.02, poll_max=0.05, resubmits=0)
        with pytest.raises(FeynTuneError, match=r"2 openai request\(s\) failed in the batch and "
                           r"0 resubmission\(s\) \(first: doc 0: HTTP 500: injected"):
            run_batch(_provider("openai", server), _requests(), options=options,
                      progress=False, notify=lambda _: None)
    assert cached_prompts(env / "home") == set(PROMPTS[2:])  # the answered ones are kept


def test_a_direct_run_after_a_batch_sends_nothing(env):
    with BatchOpenAI() as server:
        provider = _provider("openai", server)
        run_batch(provider, _requests(), options=FAST, progress=False, notify=lambda _: None)
        report = run_requests(provider, _requests(), progress=False)
        assert server.requests == [] and report.cached == len(PROMPTS)


def test_batches_are_split_at_the_apis_limits(env, monkeypatch):
    from providers.openai_provider import OpenAIBatch

    monkeypatch.setattr(OpenAIBatch, "max_requests", 3)
    with BatchOpenAI() as server:
        run_batch(_provider("openai", server), _requests(), options=FAST, progress=False,
                  notify=lambda _: None)
        assert [len(b["results"]) for b in server.batches.values()] == [3, 3, 2]
    others = [f"{p} Again." for p in PROMPTS]  # not cached yet
    api = OpenAIBatch(_provider("openai", server))
    entry_size = api.size(api.entry("k" * 64, CURRENT.text, others[0],
                                    GenerationSettings(max_tokens=64)))
    monkeypatch.setattr(OpenAIBatch, "max_requests", 50_000)
    monkeypatch.setattr(OpenAIBatch, "max_bytes", entry_size * 5 + 10)  # five lines a file
    with BatchOpenAI() as server:
        run_batch(_provider("openai", server), _requests(others), options=FAST,
                  progress=False, notify=lambda _: None)
        assert [len(b["results"]) for b in server.batches.values()] == [5, 3]


@pytest.mark.parametrize("provider", ["deepseek", "openai-compatible"])
def test_providers_without_a_batch_api_say_so_in_one_line(env, monkeypatch, provider):
    from harness.judge import rate
    from providers.lm_eval_model import ProviderLM

    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-deepseek-0123")
    with pytest.raises(FeynTuneError, match=f"provider '{provider}' has no batch API: drop "
                       "batch=true"):
        ProviderLM(provider=provider, model="m", base_url="http://127.0.0.1:9/v1", batch="true")
    spec = rate.parse_judge(f"{provider}:m,base_url=http://127.0.0.1:9/v1,batch=true")
    with pytest.raises(FeynTuneError, match="has no batch API"):
        rate.rate([], spec, GenerationSettings())
    with pytest.raises(FeynTuneError, match="batch='maybe': expected true or false"):
        ProviderLM(provider="openai", model="m", base_url="http://127.0.0.1:9/v1",
                   batch="maybe")


# -- killed and resumed ------------------------------------------------------------------------

RUN = textwrap.dedent("""
    import json, sys
    from providers.batch import BatchOptions, run_batch
    from providers.registry import create_provider
    from providers.runner import Request
    base_url, prompts = sys.argv[1], json.loads(sys.argv[2])
    provider = create_provider("openai", "gpt-4o", base_url=base_url, timeout=30)
    report = run_batch(provider, [Request(p) for p in prompts], progress=False,
                       options=BatchOptions(batch=True, poll_initial=0.05, poll_max=0.1))
    print(json.dumps({"sent": report.sent, "cached": report.cached}))
""")


def test_a_killed_batch_run_resumes_the_same_batch(tmp_path):
    home = tmp_path / "home"
    env = {**os.environ, "FEYNTUNE_HOME": str(home), "OPENAI_API_KEY": "sk-resume-batch-123",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    with BatchOpenAI() as server:
        server.hold_batches()  # in progress until released
        args = [sys.executable, "-c", RUN, server.base_url, json.dumps(PROMPTS)]
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        open_dir = home / "providers" / "batches" / "open"
        deadline = time.monotonic() + 60
        while server.polls < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.creations == 1 and len(list(open_dir.glob("*.json"))) == 1
        proc.send_signal(signal.SIGKILL)  # no chance to clean up
        proc.wait(timeout=30)
        assert cached_prompts(home) == set()

        server.release_batches()
        done = subprocess.run(args, check=False, env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        assert server.creations == 1  # resumed, not submitted again
        assert "resuming batch batch_0001 (8 request(s)" in done.stderr
        assert json.loads(done.stdout.strip().splitlines()[-1]) == {"sent": len(PROMPTS),
                                                                    "cached": 0}
    assert cached_prompts(home) == set(PROMPTS)
    assert list(open_dir.glob("*.json")) == []
    closed = list((home / "providers" / "batches" / "done").glob("*.json"))
    assert len(closed) == 1 and json.loads(closed[0].read_text())["counts"]["answered"] == 8


# -- the budget ---------------------------------------------------------------------------------

def test_worst_case_is_shown_and_a_run_over_the_budget_is_refused(env):
    requests = _requests(max_tokens=1000)
    tokens_in = sum(input_token_bound(CURRENT.text, r.prompt) for r in requests)
    price = pricing.find_price("openai", "gpt-4o")
    worst_direct = price.cost(tokens_in, 1000 * len(requests))
    worst_batch = price.cost(tokens_in, 1000 * len(requests), batch=True)
    assert worst_batch == pytest.approx(worst_direct / 2)
    heard: list[str] = []
    with BatchOpenAI() as server:
        provider = _provider("openai", server)
        cap = (worst_batch + worst_direct) / 2  # enough for the batch, not for direct requests
        with pytest.raises(FeynTuneError, match=rf"refused, the worst case \${worst_direct:.4f} "
                           rf"of {len(requests)} request\(s\) is over max_cost=\${cap:g}"):
            run_requests(provider, requests, budget=Budget(cap), progress=False,
                         notify=heard.append)
        assert server.requests == [] and server.creations == 0  # nothing sent
        assert heard[0].startswith(f"openai:gpt-4o: worst case of {len(requests)} request(s) "
                                   f"(direct): <= {tokens_in} input + {1000 * len(requests)} "
                                   f"output tokens, at most ${worst_direct:.4f}")
        report = run_batch(provider, requests, options=FAST, budget=Budget(cap),
                           progress=False, notify=heard.append)
        assert server.creations == 1 and report.sent == len(requests)
        with pytest.raises(FeynTuneError, match="refused"):
            run_batch(provider, _requests(["a new prompt"], 1000), options=FAST,
                      budget=Budget(worst_batch / 1000), progress=False, notify=heard.append)
        assert server.creations == 1


def test_direct_sending_stops_at_the_cap(env):
    """Answers that cost more than their bound (a server counting more tokens than allowed):
    the cap on received cost stops the run; what was answered is kept."""
    long_answer = " ".join(["word"] * 5000)  # counted as 5,000 output tokens by the fake
    requests = _requests(max_tokens=50)
    with FakeOpenAI(answer=lambda p: long_answer) as server:
        provider = _provider("openai", server)
        price = pricing.find_price("openai", "gpt-4o")
        one_answer = price.cost(0, 5000)
        budget = Budget(one_answer * 2.5)  # the worst case of all eight fits; two answers do
        with pytest.raises(FeynTuneError, match=r"stopped sending at max_cost=\$.*answers "
                           r"received cost \$0\.1\d+.*running again sends only the missing"):
            run_requests(provider, requests, limits=RunLimits(num_concurrent=1),
                         budget=budget, progress=False, notify=lambda _: None)
        assert len(server.requests) == 3  # the third answer passed the cap: nothing after it
    assert budget.received <= budget.max_cost + one_answer
    assert len(cached_prompts(env / "home")) == 3


def test_batch_submission_stops_at_the_cap(env):
    """Answers that cost more than their bound: the failed requests of the first batch are not
    submitted again once the answers received have used the budget."""
    long_answer = " ".join(["word"] * 5000)  # 5,000 output tokens each, over max_tokens=50
    with BatchOpenAI(answer=lambda p: long_answer) as server:
        server.fail_in_next_batch(4)
        provider = _provider("openai", server)
        with pytest.raises(FeynTuneError, match=r"stopped at max_cost=\$0.05 with 4 "
                           r"request\(s\) not submitted.*4 of 8 answers are stored"):
            run_batch(provider, _requests(max_tokens=50), options=FAST, budget=Budget(0.05),
                      progress=False, notify=lambda _: None)
        assert server.creations == 1  # the second batch was never created
    assert len(cached_prompts(env / "home")) == 4


def test_judge_options_take_batch_and_budget():
    from harness.judge import rate

    spec = rate.parse_judge("openai:gpt-4.1,batch=true,max_cost=2.5,batch_poll=30")
    assert spec.batch.batch and spec.batch.poll_initial == 30 and spec.max_cost == 2.5
    with pytest.raises(FeynTuneError, match="max_cost='lots' is not a number"):
        rate.parse_judge("openai:gpt-4.1,max_cost=lots")


def test_provider_cost_of_a_run_record():
    from harness.runs.lmeval_outputs import provider_cost

    def call(requests, batch, usd):
        return {"usage_all_answers": {"requests": requests, "input_tokens": 10 * requests,
                                      "output_tokens": 20 * requests, "batch_requests": batch},
                "cost_all_answers": {"usd": usd}}

    config = {"provider_run": {"runs": [call(3, 3, 0.5), call(2, 0, 0.25)]}}
    assert provider_cost(config) == {"input_tokens": 50, "output_tokens": 100, "requests": 5,
                                     "batch_requests": 3, "usd": 0.75, "route": "batch+direct"}
    config = {"provider_run": {"runs": [call(3, 0, None)]}}
    assert provider_cost(config)["usd"] is None and provider_cost(config)["route"] == "direct"
    assert provider_cost({"model": "hf"}) is None


def test_usage_costs_batch_answers_at_batch_prices():
    usage = Usage()
    usage.add(Completion("a", "stop", 1_000_000, 0))
    usage.add(Completion("b", "stop", 1_000_000, 1_000_000, batch=True))
    cost = usage.cost("openai", "gpt-4o")
    # direct: 1M input at 2.50; batch: 1M input at 1.25 + 1M output at 5.00
    assert cost["usd"] == pytest.approx(2.50 + 1.25 + 5.00) and cost["usd_batch"] == 6.25
    assert pricing.find_price("deepseek", "deepseek-chat").has_batch is False
    assert pricing.load_table()["batch"]["as_of"]


@pytest.mark.parametrize("provider", sorted(BATCH_SERVERS))
def test_a_batch_request_is_the_direct_request(env, provider, tmp_path):
    """Each batch line carries the very body the direct route posts (model, system message or
    instruction, settings, stop sequences)."""
    from providers.cache import CompletionCache

    requests = [Request(PROMPTS[0], GenerationSettings(max_tokens=33, stop=("\n\n", "END")))]
    with BATCH_SERVERS[provider]() as server:
        seen: list = []
        create = server._create
        server._create = lambda items: (seen.extend(items), create(items))[1]
        run_requests(_provider(provider, server), requests, progress=False,
                     cache=CompletionCache(tmp_path / "direct.sqlite"))
        run_batch(_provider(provider, server), requests, options=FAST, progress=False,
                  cache=CompletionCache(tmp_path / "batch.sqlite"), notify=lambda _: None)
        direct_body = server.requests[0]["body"]
    assert len(seen) == 1 and seen[0][1] == direct_body
