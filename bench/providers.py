"""Provider harness speed against a loopback OpenAI-format server that answers after 50 ms.

    .venv/bin/python bench/providers.py [--requests 200] [--latency 0.05] [--concurrency 32]

Measured in one run, with the same server and the same request bodies:
- throughput: the harness with 32 requests in flight against the harness one at a time
  (target: at least 20x);
- overhead per request: the harness one at a time (cache lookup and write, rate limiter,
  classification, thread pool) against bare `openai` SDK calls one at a time, measured in
  alternating blocks so that drift of the machine hits both alike (target: at most 2 ms);
  repeated against a server answering at once, where the 50 ms sleep adds no noise.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the loopback servers of the tests
sys.path.insert(0, str(ROOT))

import openai

from providers.base import GenerationSettings
from providers.cache import CompletionCache
from providers.instruction import CURRENT
from providers.registry import create_provider
from providers.runner import Request, RunLimits, run_requests


@contextlib.contextmanager
def server_process(delay: float):
    """The loopback server in its own process, as a remote API would be: in this process it
    would compete with the client for the GIL and the figures would measure that instead."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "fake_servers.py"), "--delay", str(delay)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        yield proc.stdout.readline().strip()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def prompts(n: int, tag: str) -> list[str]:
    return [f"[{tag} {i}] We compute the one-loop partition function of the M2-brane." for i in
            range(n)]


def bare_sdk(base_url: str, items: list[str]) -> float:
    """The same requests through the SDK alone: no cache, no limiter, no threads."""
    provider = create_provider("openai", "bench-model", base_url=base_url)  # for the body only
    client = openai.OpenAI(api_key="sk-bench", base_url=base_url, max_retries=0, timeout=30)
    settings = GenerationSettings()
    start = time.perf_counter()
    for prompt in items:
        reply = client.chat.completions.create(
            **provider.request_body(CURRENT.text, prompt, settings))
        assert reply.choices[0].message.content
    return time.perf_counter() - start


def harness(base_url: str, items: list[str], concurrency: int, cache: CompletionCache) -> float:
    provider = create_provider("openai", "bench-model", base_url=base_url)
    start = time.perf_counter()
    report = run_requests(provider, [Request(p) for p in items],
                          limits=RunLimits(num_concurrent=concurrency), cache=cache,
                          progress=False)
    elapsed = time.perf_counter() - start
    assert report.sent == len(items), "every request must be sent (fresh prompts, no cache hit)"
    return elapsed


def overhead(base_url: str, n: int, blocks: int, cache: CompletionCache, tag: str):
    """Alternate bare and harness blocks; returns (bare s, harness s) summed over n each."""
    size = n // blocks
    bare_t, harness_t = [], []
    for b in range(blocks):
        bare_t.append(bare_sdk(base_url, prompts(size, f"{tag}-bare-{b}")))
        harness_t.append(harness(base_url, prompts(size, f"{tag}-seq-{b}"), 1, cache))
    return sum(bare_t), sum(harness_t), size * blocks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--blocks", type=int, default=4)
    args = parser.parse_args()
    os.environ["OPENAI_API_KEY"] = "sk-bench"
    n = args.requests

    with tempfile.TemporaryDirectory() as home:
        os.environ["FEYNTUNE_HOME"] = home  # a fresh cache: every request goes to the server
        cache = CompletionCache()
        with server_process(args.latency) as url:
            harness(url, prompts(8, "warm-up"), 4, cache)
            bare_sdk(url, prompts(4, "warm-up-bare"))
            bare_s, seq_s, m = overhead(url, n, args.blocks, cache, "lat")
            conc = [harness(url, prompts(n, f"conc-{r}"), args.concurrency, cache)
                    for r in range(3)]
        conc_s = statistics.median(conc)
        with server_process(0.0) as url:
            harness(url, prompts(8, "warm-up-0"), 1, cache)
            bare0_s, seq0_s, m0 = overhead(url, n, args.blocks, cache, "zero")

    speedup = seq_s / conc_s
    per_req_ms = (seq_s - bare_s) / m * 1000
    per_req0_ms = (seq0_s - bare0_s) / m0 * 1000
    print(f"provider harness, loopback OpenAI-format server, {args.latency * 1000:.0f} ms "
          f"per answer, {n} requests")
    print(f"  sequential harness      {seq_s:8.3f} s  {m / seq_s:7.1f} req/s")
    print(f"  {args.concurrency:2d} concurrent harness  {conc_s:8.3f} s  {n / conc_s:7.1f} req/s"
          f"  (median of 3: {', '.join(f'{c:.3f}' for c in conc)})")
    print(f"  throughput ratio        {speedup:8.1f}x   (target >= 20x)  "
          f"{'OK' if speedup >= 20 else 'MISSED'}")
    print(f"  bare SDK sequential     {bare_s:8.3f} s  {bare_s / m * 1000:7.2f} ms/req")
    print(f"  harness overhead        {per_req_ms:8.3f} ms/req  (target <= 2 ms)  "
          f"{'OK' if per_req_ms <= 2 else 'MISSED'}")
    print(f"  at 0 ms server latency: bare {bare0_s / m0 * 1000:.2f} ms/req, harness "
          f"{seq0_s / m0 * 1000:.2f} ms/req, overhead {per_req0_ms:.3f} ms/req")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
