"""A provider run killed midway (SIGKILL, no chance to clean up) and started again sends exactly
the requests whose answers were not stored: nothing answered is paid for twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from fake_servers import FakeOpenAI, cached_prompts

N = 12
PROMPTS = [f"Abstract number {i} begins with a duality." for i in range(N)]

RUN = textwrap.dedent("""
    import json, sys
    from providers.registry import create_provider
    from providers.runner import Request, RunLimits, run_requests
    base_url, prompts = sys.argv[1], json.loads(sys.argv[2])
    provider = create_provider("openai", "gpt-resume", base_url=base_url, timeout=30)
    report = run_requests(provider, [Request(p) for p in prompts],
                          limits=RunLimits(num_concurrent=3), progress=False)
    print(json.dumps({"sent": report.sent, "cached": report.cached}))
""")


def test_killed_run_resumes_with_exactly_the_missing_requests(tmp_path):
    home = tmp_path / "home"
    env = {**os.environ, "FEYNTUNE_HOME": str(home), "OPENAI_API_KEY": "sk-resume-test-123",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    args = [sys.executable, "-c", RUN, "", json.dumps(PROMPTS)]

    with FakeOpenAI() as first:
        first.hold_after(5)  # five answers, then the server hangs the rest
        args[3] = first.base_url
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while len(cached_prompts(home)) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)  # let the held requests sit in flight
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        stored = cached_prompts(home)
        assert len(stored) == 5 and first.answered == 5
        assert len(first.requests) > 5  # some were in flight when it died

    with FakeOpenAI() as second:
        args[3] = second.base_url
        done = subprocess.run(args, check=False, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout.strip().splitlines()[-1]) == {"sent": N - 5, "cached": 5}
        resent = second.prompts()
    assert sorted(resent) == sorted(set(PROMPTS) - stored)  # exactly the missing ones, once each
    assert cached_prompts(home) == set(PROMPTS)
