"""What a provider's batch API has to offer the batch route (providers.batch): how one request
is written as the API takes it, the API's per-batch limits, and submit / state / results.

Each provider with a batch API implements this in its own file, next to its direct route, with
its official SDK; everything else (splitting, resuming, polling, the cache, failures resent,
the budget) is providers.batch, once for all of them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from providers.base import (
    Completion,
    DocumentError,
    GenerationSettings,
    Provider,
    ProviderError,
    TransientError,
    classify_http_status,
)


@dataclass(frozen=True)
class BatchState:
    """A batch as the API reports it: its own status word, and whether it will change."""

    status: str
    ended: bool
    completed: int = 0  # requests answered so far (0 where the API counts only at the end)
    failed: int = 0


class BatchAPI:
    # The API's documented limits on one batch; a run needing more submits several batches.
    max_requests: ClassVar[int] = 10_000
    max_bytes: ClassVar[int] = 100_000_000

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.client = provider.client

    def entry(self, custom_id: str, instruction: str, prompt: str,
              settings: GenerationSettings) -> dict[str, Any]:
        """One request, as a JSON-able value of the form the API takes, carrying `custom_id`."""
        raise NotImplementedError

    def size(self, entry: dict[str, Any]) -> int:
        """Bytes the entry adds to a submission (a JSON line)."""
        return len(json.dumps(entry, ensure_ascii=False).encode("utf-8")) + 1

    def submit(self, entries: list[dict[str, Any]]) -> str:
        """Create one batch of these entries; its id. SDK exceptions pass through."""
        raise NotImplementedError

    def state(self, batch_id: str) -> BatchState:
        raise NotImplementedError

    def results(self, batch_id: str) -> Iterator[tuple[str, Completion | ProviderError]]:
        """(custom_id, answer or why there is none) of an ended batch, for the requests the
        API reports on; one it does not mention has failed as well (the route counts it)."""
        raise NotImplementedError


def request_error(provider: Provider, status: int | None, message: str) -> ProviderError:
    """A request that failed inside a batch, by the HTTP status the API gives it: a document
    error when it concerns this prompt (too long, refused), else one worth sending again."""
    err = classify_http_status(status, message, None, provider)
    if isinstance(err, DocumentError):
        return err
    return TransientError(str(err), status=status)
