"""Client-side rate limits: token buckets for requests and tokens per minute, shared by all
worker threads of a run, plus a pause that a 429 with Retry-After imposes on everyone."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class _Bucket:
    """Refills at `per_minute / 60` per second up to one second's worth (at least `floor`),
    so a limit is never exceeded in a burst shorter than a minute."""

    def __init__(self, per_minute: float, floor: float) -> None:
        if per_minute <= 0:
            raise ValueError("a rate limit must be positive")
        self.rate = per_minute / 60.0
        self.capacity = max(floor, self.rate)
        self.level = self.capacity

    def refill(self, elapsed: float) -> None:
        self.level = min(self.capacity, self.level + elapsed * self.rate)

    def wait_for(self, amount: float) -> float:
        need = min(amount, self.capacity)  # a request bigger than the bucket waits for a full one
        return 0.0 if self.level >= need else (need - self.level) / self.rate


class RateLimiter:
    PAUSE_REASON = "a pause after HTTP 429"

    def __init__(
        self,
        rpm: float | None = None,
        tpm: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._requests = _Bucket(rpm, 1.0) if rpm else None
        self._tokens = _Bucket(tpm, 1.0) if tpm else None
        self._clock = clock
        self._last = clock()
        self._paused_until = 0.0
        self._lock = threading.Lock()

    def _refill(self) -> float:
        now = self._clock()
        for bucket in (self._requests, self._tokens):
            if bucket:
                bucket.refill(now - self._last)
        self._last = now
        return now

    def acquire(
        self,
        tokens: float,
        stop: threading.Event,
        on_wait: Callable[[float, str], None] | None = None,
    ) -> bool:
        """Block until one request of about `tokens` tokens may go; False if `stop` was set.
        `on_wait(seconds, reason)` hears of the wait once, before it starts."""
        told = False
        while not stop.is_set():
            with self._lock:
                now = self._refill()
                waits = {self.PAUSE_REASON: max(0.0, self._paused_until - now)}
                if self._requests:
                    waits["the rpm limit"] = self._requests.wait_for(1.0)
                if self._tokens:
                    waits["the tpm limit"] = self._tokens.wait_for(tokens)
                reason, wait = max(waits.items(), key=lambda item: item[1])
                if wait <= 0.0:
                    if self._requests:
                        self._requests.level -= 1.0
                    if self._tokens:
                        self._tokens.level -= tokens
                    return True
            if on_wait is not None and not told:
                told = True
                on_wait(wait, reason)
            stop.wait(min(wait, 0.5))
        return False

    def settle(self, reserved: float, used: float) -> None:
        """Correct a token reservation by what the provider reports it actually counted."""
        if self._tokens:
            with self._lock:
                self._tokens.level = min(self._tokens.capacity, self._tokens.level + reserved - used)

    def pause(self, seconds: float) -> None:
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)
