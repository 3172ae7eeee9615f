"""A spending cap for a provider run (`max_cost=USD`): the worst case is shown and checked
before anything is sent, and while answers arrive no request is sent whose worst case, added to
the cost of the answers received and the worst case of the requests in flight, would pass it.

The worst case of one request: its input tokens bounded from above, and the output at its token
limit, at the price table's rates (the batch rates for a batch run). The bound on input tokens
needs no tokenizer: the providers' tokenizers are byte-level, so a text never makes more tokens
than it has UTF-8 bytes; a few tokens more cover the chat formatting of the two messages.
The bound is loose (about four times the real count on English), but it is a bound: a budget
that the worst case fits cannot be exceeded.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from harness.ground.errors import FeynTuneError
from providers import pricing
from providers.base import GenerationSettings

CHAT_OVERHEAD_TOKENS = 16  # role markers and separators around the system and user message
# model_args of a provider run for the cap -> type.
BUDGET_ARGS = {"max_cost": float}


def input_token_bound(instruction: str, prompt: str) -> int:
    """No more input tokens than this can be billed for the request."""
    return len(instruction.encode("utf-8")) + len(prompt.encode("utf-8")) + CHAT_OVERHEAD_TOKENS


@dataclass(frozen=True)
class WorstCase:
    """The most a set of requests can cost; usd None when the model has no price."""

    requests: int
    input_tokens: int
    output_tokens: int
    usd: float | None
    batch: bool
    price_note: str = ""

    def line(self, name: str) -> str:
        route = "batch" if self.batch else "direct"
        cost = f"at most ${self.usd:.4f}" if self.usd is not None else "cost unknown"
        return (f"{name}: worst case of {self.requests} request(s) ({route}): "
                f"<= {self.input_tokens} input + {self.output_tokens} output tokens, {cost} "
                f"{self.price_note}".rstrip())


def request_worst_tokens(instruction: str, prompt: str,
                         settings: GenerationSettings) -> tuple[int, int]:
    return input_token_bound(instruction, prompt), settings.max_tokens


def worst_case(provider: str, model: str, instruction: str,
               prompts: list[tuple[str, GenerationSettings]], batch: bool) -> WorstCase:
    tokens_in = sum(input_token_bound(instruction, p) for p, _ in prompts)
    tokens_out = sum(s.max_tokens for _, s in prompts)
    price = pricing.find_price(provider, model)
    if price is None:
        return WorstCase(len(prompts), tokens_in, tokens_out, None, batch,
                         f"(no price for {provider}/{model} in {pricing.PRICES})")
    table = pricing.load_table()
    as_of = (table.get("batch") or {}).get("as_of") if batch else table.get("as_of")
    return WorstCase(len(prompts), tokens_in, tokens_out,
                     price.cost(tokens_in, tokens_out, batch=batch), batch,
                     f"({'batch ' if batch else ''}prices of {as_of}, row {price.entry})")


class Budget:
    """The cap over one provider model's whole life (several lm-eval calls, a judge's passes).
    Thread-safe: the direct route's workers reserve and settle from their threads."""

    def __init__(self, max_cost: float | None = None) -> None:
        if max_cost is not None and not max_cost > 0:
            raise FeynTuneError(f"max_cost must be a positive number of US dollars, "
                                f"got {max_cost}")
        self.max_cost = max_cost
        self.received = 0.0   # cost of the answers received under this budget
        self.in_flight = 0.0  # worst case of the requests sent and not yet answered
        self._lock = threading.Lock()

    @classmethod
    def from_args(cls, args: dict) -> Budget:
        value = args.get("max_cost")
        if value is None or value == "":
            return cls()
        try:
            return cls(float(value))
        except ValueError:
            raise FeynTuneError(f"max_cost={value!r} is not a number of US dollars") from None

    @property
    def capped(self) -> bool:
        return self.max_cost is not None

    def left(self) -> float | None:
        with self._lock:
            return None if self.max_cost is None else self.max_cost - self.received - self.in_flight

    def check(self, worst: WorstCase, name: str) -> None:
        """Refuse, before sending, work whose worst case does not fit what is left."""
        if self.max_cost is None:
            return
        if worst.usd is None:
            raise FeynTuneError(f"{name}: max_cost={self.max_cost:g} cannot be held: "
                                f"{worst.price_note.strip('()')}")
        left = self.left()
        if worst.usd > left + 1e-12:
            spent = (f" (${self.max_cost - left:.4f} of it already spent or in flight)"
                     if left < self.max_cost else "")
            raise FeynTuneError(
                f"{name}: refused, the worst case ${worst.usd:.4f} of {worst.requests} "
                f"request(s) is over max_cost=${self.max_cost:g}{spent}; raise max_cost, "
                "send fewer documents (--limit) or lower the token limit"
            )

    def reserve(self, usd: float) -> bool:
        """Hold `usd` for a request about to be sent; False (nothing held) when it would pass
        the cap."""
        with self._lock:
            if self.max_cost is not None and (
                    self.received + self.in_flight + usd > self.max_cost + 1e-12):
                return False
            self.in_flight += usd
            return True

    def hold(self, usd: float) -> None:
        """Count work already at the provider (a resumed batch) as in flight, cap or not."""
        with self._lock:
            self.in_flight += usd

    def settle(self, reserved: float, paid: float) -> None:
        """A reserved request ended: `paid` is what its answer cost (0 if none came)."""
        with self._lock:
            self.in_flight = max(0.0, self.in_flight - reserved)
            self.received += paid

    def stop_line(self, name: str) -> str:
        return (f"{name}: stopped sending at max_cost=${self.max_cost:g}: answers received "
                f"cost ${self.received:.4f}, and the next request's worst case would pass the cap")
