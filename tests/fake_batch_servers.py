"""Loopback servers speaking the batch APIs as their documentation describes, on top of the
direct fakes (same answers, same usage figures), for the official SDKs to drive in tests:

- OpenAI Batch API: POST /v1/files (multipart, purpose=batch), POST /v1/batches,
  GET /v1/batches/{id}, GET /v1/files/{id}/content (output and error files, JSON lines);
- Anthropic Message Batches: POST /v1/messages/batches, GET /v1/messages/batches/{id},
  GET {results_url} (JSON lines);
- Gemini batch mode: POST /v1beta/models/{model}:batchGenerateContent (inline requests),
  GET /v1beta/batches/{id} (state, inline responses).

A batch stays in progress for `polls_before_end` polls (or until `release_batches()` when
`hold_batches()` was called), then ends; `fail_in_next_batch(n)` makes the first n requests of
the next batch fail inside it. `creations` counts batches created.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import threading
import time
from datetime import datetime, timezone
from typing import Any

from fake_servers import FakeAnthropic, FakeGemini, FakeOpenAI, _Handler


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _BatchHandler(_Handler):
    def do_POST(self) -> None:
        server = self.server.owner  # type: ignore[attr-defined]
        if not server.is_batch_path(self.path):
            super().do_POST()
            return
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        status, payload = server.batch_post(self.path, dict(self.headers), raw)
        self._send(status, payload if isinstance(payload, bytes) else json.dumps(payload).encode(),
                   {})

    def do_GET(self) -> None:
        server = self.server.owner  # type: ignore[attr-defined]
        status, payload = server.batch_get(self.path)
        self._send(status, payload if isinstance(payload, bytes) else json.dumps(payload).encode(),
                   {})


class _BatchMixin:
    """Batch bookkeeping shared by the three fakes."""

    handler = _BatchHandler
    polls_before_end = 1

    def _setup_batches(self) -> None:
        self.batches: dict[str, dict[str, Any]] = {}
        self.creations = 0
        self.polls = 0
        self._fail_next = 0
        self._expire_next = False
        self._held = threading.Event()
        self._held.set()
        self._batch_lock = threading.Lock()

    def hold_batches(self) -> None:
        """Batches stay in progress until release_batches()."""
        self._held.clear()

    def release_batches(self) -> None:
        self._held.set()

    def fail_in_next_batch(self, n: int) -> None:
        self._fail_next = n

    def expire_next_batch(self) -> None:
        """The next batch ends as expired with none of its requests run."""
        self._expire_next = True

    def _create(self, requests: list[tuple[str, Any]]) -> dict[str, Any]:
        """requests: (custom id, direct-route body). Answers are made now, as the direct fake
        would give them; they are shown once the batch ends."""
        with self._batch_lock:
            self.creations += 1
            number = self.creations
            fail, self._fail_next = self._fail_next, 0
            expire, self._expire_next = self._expire_next, False
        if expire:
            fail = len(requests)
        results = []
        for i, (custom_id, body) in enumerate(requests):
            if i < fail:
                results.append((custom_id, None))
                continue
            prompt = self.prompt_of(body)
            text = self.answer(prompt)
            results.append((custom_id, self.reply(body, "", text, prompt)))
        batch = {"id": self.batch_id(number), "created": time.time(), "polls": 0,
                 "results": results, "ended": False, "expired": expire}
        self.batches[batch["id"]] = batch
        return batch

    def _poll(self, batch: dict[str, Any]) -> None:
        with self._batch_lock:
            self.polls += 1
            batch["polls"] += 1
            if self._held.is_set() and batch["polls"] >= self.polls_before_end:
                batch["ended"] = True


class BatchOpenAI(_BatchMixin, FakeOpenAI):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._setup_batches()
        self.files: dict[str, bytes] = {}

    @staticmethod
    def batch_id(number: int) -> str:
        return f"batch_{number:04d}"

    def is_batch_path(self, path: str) -> bool:
        return path.startswith(("/v1/files", "/v1/batches"))

    def _file(self, data: bytes, purpose: str, name: str) -> dict[str, Any]:
        file_id = f"file-{len(self.files) + 1}"
        self.files[file_id] = data
        return {"id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                "filename": name, "purpose": purpose, "status": "processed"}

    def batch_post(self, path: str, headers: dict[str, str], raw: bytes):
        if path == "/v1/files":
            head = f"Content-Type: {headers.get('Content-Type')}\r\n\r\n".encode()
            message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
            fields = {part.get_param("name", header="content-disposition"): part
                      for part in message.iter_parts()}
            data = fields["file"].get_payload(decode=True)
            purpose = fields["purpose"].get_payload(decode=True).decode()
            return 200, self._file(data, purpose, fields["file"].get_filename() or "upload")
        if path == "/v1/batches":
            body = json.loads(raw)
            lines = [json.loads(x) for x in self.files[body["input_file_id"]].splitlines() if x]
            assert all(x["url"] == body["endpoint"] == "/v1/chat/completions" for x in lines)
            assert body["completion_window"] == "24h"
            batch = self._create([(x["custom_id"], x["body"]) for x in lines])
            batch["input_file_id"] = body["input_file_id"]
            return 200, self._batch_object(batch)
        return 404, {"error": {"message": f"no route {path}"}}

    def batch_get(self, path: str):
        if path.startswith("/v1/batches/"):
            batch = self.batches[path.rsplit("/", 1)[1]]
            self._poll(batch)
            return 200, self._batch_object(batch)
        if path.startswith("/v1/files/") and path.endswith("/content"):
            return 200, self.files[path.split("/")[3]]
        return 404, {"error": {"message": f"no route {path}"}}

    @staticmethod
    def _error_line(i: int, custom_id: str, expired: bool) -> dict[str, Any]:
        if expired:  # never run: no response, the batch's own error code
            return {"id": f"req_e{i}", "custom_id": custom_id, "response": None,
                    "error": {"code": "batch_expired", "message": "This request could not be "
                              "executed before the completion window expired."}}
        return {"id": f"req_e{i}", "custom_id": custom_id, "error": None,
                "response": {"status_code": 500, "request_id": f"e{i}", "body": {"error": {
                    "message": "injected batch failure", "type": "server_error"}}}}

    def _batch_object(self, batch: dict[str, Any]) -> dict[str, Any]:
        ok = [(c, r) for c, r in batch["results"] if r is not None]
        bad = [c for c, r in batch["results"] if r is None]
        obj = {"id": batch["id"], "object": "batch", "endpoint": "/v1/chat/completions",
               "errors": None, "input_file_id": batch.get("input_file_id", ""),
               "completion_window": "24h", "status": "in_progress", "output_file_id": None,
               "error_file_id": None, "created_at": int(batch["created"]),
               "request_counts": {"total": len(batch["results"]), "completed": 0, "failed": 0}}
        if batch["ended"]:
            if "output_file_id" not in batch:
                out = "".join(json.dumps({"id": f"req_{i}", "custom_id": c, "error": None,
                                          "response": {"status_code": 200, "request_id": f"r{i}",
                                                       "body": r}}) + "\n"
                              for i, (c, r) in enumerate(ok))
                err = "".join(json.dumps(self._error_line(i, c, batch["expired"])) + "\n"
                              for i, c in enumerate(bad))
                batch["output_file_id"] = self._file(out.encode(), "batch_output", "out.jsonl")["id"]
                batch["error_file_id"] = (self._file(err.encode(), "batch_output", "err.jsonl")["id"]
                                          if bad else None)
            obj.update(status="expired" if batch["expired"] else "completed",
                       output_file_id=batch["output_file_id"],
                       error_file_id=batch["error_file_id"], completed_at=int(time.time()),
                       request_counts={"total": len(batch["results"]), "completed": len(ok),
                                       "failed": len(bad)})
        return obj


class BatchAnthropic(_BatchMixin, FakeAnthropic):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._setup_batches()

    @staticmethod
    def batch_id(number: int) -> str:
        return f"msgbatch_{number:04d}"

    def is_batch_path(self, path: str) -> bool:
        return path.startswith("/v1/messages/batches")

    def batch_post(self, path: str, headers: dict[str, str], raw: bytes):
        body = json.loads(raw)
        batch = self._create([(r["custom_id"], r["params"]) for r in body["requests"]])
        return 200, self._batch_object(batch)

    def batch_get(self, path: str):
        parts = path.split("?")[0].split("/")
        batch = self.batches[parts[4]]
        if len(parts) > 5 and parts[5] == "results":
            lines = []
            for custom_id, reply in batch["results"]:
                result = ({"type": "succeeded", "message": reply} if reply is not None else
                          {"type": "expired"} if batch["expired"] else
                          {"type": "errored", "error": {"type": "error", "error": {
                              "type": "api_error", "message": "injected batch failure"}}})
                lines.append(json.dumps({"custom_id": custom_id, "result": result}) + "\n")
            return 200, "".join(lines).encode()
        self._poll(batch)
        return 200, self._batch_object(batch)

    def _batch_object(self, batch: dict[str, Any]) -> dict[str, Any]:
        n = len(batch["results"])
        bad = sum(r is None for _, r in batch["results"])
        ended = batch["ended"]
        expired = bad if ended and batch["expired"] else 0
        counts = {"processing": 0 if ended else n, "succeeded": n - bad if ended else 0,
                  "errored": bad - expired if ended else 0, "canceled": 0, "expired": expired}
        return {"id": batch["id"], "type": "message_batch",
                "processing_status": "ended" if ended else "in_progress",
                "request_counts": counts, "created_at": _iso(batch["created"]),
                "expires_at": _iso(batch["created"] + 86400), "archived_at": None,
                "cancel_initiated_at": None, "ended_at": _iso(time.time()) if ended else None,
                "results_url": (f"{self.root}/v1/messages/batches/{batch['id']}/results"
                                if ended else None)}


class BatchGemini(_BatchMixin, FakeGemini):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._setup_batches()

    @staticmethod
    def batch_id(number: int) -> str:
        return f"batches/job{number:04d}"

    def is_batch_path(self, path: str) -> bool:
        return path.endswith(":batchGenerateContent")

    def batch_post(self, path: str, headers: dict[str, str], raw: bytes):
        body = json.loads(raw)
        model = path.split("/models/")[-1].split(":")[0]
        items = body["batch"]["inputConfig"]["requests"]["requests"]
        batch = self._create([(json.dumps(r.get("metadata")), r["request"]) for r in items])
        batch["model"] = f"models/{model}"
        return 200, self._batch_object(batch)

    def batch_get(self, path: str):
        name = "batches/" + path.split("?")[0].split("/batches/")[-1]
        batch = self.batches[name]
        self._poll(batch)
        return 200, self._batch_object(batch)

    def _batch_object(self, batch: dict[str, Any]) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
            "name": batch["id"], "model": batch.get("model", ""),
            "state": ("BATCH_STATE_RUNNING" if not batch["ended"] else
                      "BATCH_STATE_EXPIRED" if batch["expired"] else "BATCH_STATE_SUCCEEDED"),
            "createTime": _iso(batch["created"]), "updateTime": _iso(time.time())}
        if batch["ended"] and not batch["expired"]:
            responses = []
            for key, reply in batch["results"]:
                item: dict[str, Any] = {"metadata": json.loads(key)}
                if reply is None:
                    item["error"] = {"code": 13, "message": "injected batch failure"}
                else:
                    item["response"] = reply
                responses.append(item)
            metadata["output"] = {"inlinedResponses": {"inlinedResponses": responses}}
            metadata["endTime"] = _iso(time.time())
        return {"name": batch["id"], "metadata": metadata, "done": batch["ended"]}


BATCH_SERVERS = {"openai": BatchOpenAI, "anthropic": BatchAnthropic, "gemini": BatchGemini}
