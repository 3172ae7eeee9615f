"""Loopback servers speaking the real wire formats of OpenAI chat completions, Anthropic
messages and Gemini generateContent, for the real SDK clients to talk to in tests and the
benchmark. Faults are queued per server and served one per request, in order."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def default_answer(prompt: str) -> str:
    return f"continuation of <{prompt[:24]}> with a result."


@dataclass
class Fault:
    """One injected misbehaviour: `status` with `body`/`headers`, or `delay` before answering,
    or `malformed` (invalid JSON with 200), or `drop` (close the socket, no answer)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    message: str = "injected error"
    delay: float = 0.0
    malformed: bool = False
    drop: bool = False


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real APIs
    disable_nagle_algorithm = True  # else Nagle + delayed ACK add ~40 ms to every answer

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        server: FakeServer = self.server.owner  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length", 0))
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            body = {}
        fault, number = server._record(self.path, dict(self.headers), body)
        server._hold_if_asked(number)
        if server.delay:
            time.sleep(server.delay)
        if fault and fault.delay:
            time.sleep(fault.delay)
        if fault and fault.drop:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if fault and fault.malformed:
            self._send(200, b'{"id": "x", "choices": [', {})
            return
        if fault and fault.status != 200:
            payload = server.error_body(fault.status, fault.message)
            self._send(fault.status, json.dumps(payload).encode(), fault.headers)
            return
        prompt = server.prompt_of(body)
        text = server.answer(prompt)
        payload = server.reply(body, self.path, text, prompt)
        self._send(200, json.dumps(payload).encode(), {})
        server._answered()

    def _send(self, status: int, data: bytes, headers: dict[str, str]) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers.items():
                self.send_header(k, v)
            self._headers_buffer.append(b"\r\n")  # headers and body in one write
            self._headers_buffer.append(data)
            self.flush_headers()
        except OSError:  # the client gave up (timeout test)
            self.close_connection = True


class FakeServer:
    """`with FakeOpenAI() as server:` then point an SDK at `server.base_url`."""

    kind = ""
    handler: type[BaseHTTPRequestHandler] = None  # type: ignore[assignment]  # _Handler, below

    def __init__(self, answer: Callable[[str], str] = default_answer, delay: float = 0.0):
        self.answer = answer
        self.delay = delay
        self.faults: deque[Fault | None] = deque()
        self.requests: list[dict[str, Any]] = []
        self.answered = 0
        self._lock = threading.Lock()
        self._hold_after: int | None = None
        self._release = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self.handler or _Handler)
        self._httpd.daemon_threads = True
        self._httpd.owner = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    # -- control --------------------------------------------------------------------------------
    def inject(self, *faults: Fault | None) -> None:
        """Serve these (None = a normal answer) to the next requests, in order."""
        self.faults.extend(faults)

    def hold_after(self, n: int) -> None:
        """Answer the first n requests, then keep the rest waiting until `release()`."""
        self._hold_after = n

    def release(self) -> None:
        self._release.set()

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def prompts(self) -> list[str]:
        with self._lock:
            return [self.prompt_of(r["body"]) for r in self.requests]

    def __enter__(self) -> FakeServer:  # noqa: PYI034
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    # -- internals --------------------------------------------------------------------------
    def _record(self, path: str, headers: dict[str, str], body: Any) -> tuple[Fault | None, int]:
        """Store the request; its fault (if any) and its 1-based arrival number."""
        with self._lock:
            self.requests.append({"path": path, "headers": headers, "body": body})
            return (self.faults.popleft() if self.faults else None), len(self.requests)

    def _hold_if_asked(self, number: int) -> None:
        if self._hold_after is not None and number > self._hold_after:
            self._release.wait(60)

    def _answered(self) -> None:
        with self._lock:
            self.answered += 1

    # -- wire format, per provider ----------------------------------------------------------
    def prompt_of(self, body: Any) -> str:
        raise NotImplementedError

    def reply(self, body: Any, path: str, text: str, prompt: str) -> Any:
        raise NotImplementedError

    def error_body(self, status: int, message: str) -> Any:
        raise NotImplementedError


class FakeOpenAI(FakeServer):
    """POST /v1/chat/completions (OpenAI, DeepSeek, vLLM, llama.cpp all speak it)."""

    kind = "openai"

    @property
    def base_url(self) -> str:
        return f"{self.root}/v1"

    def prompt_of(self, body: Any) -> str:
        users = [m["content"] for m in body.get("messages", []) if m.get("role") == "user"]
        return users[-1] if users else ""

    def reply(self, body: Any, path: str, text: str, prompt: str) -> Any:
        n_in, n_out = len(prompt.split()) + 40, len(text.split())
        return {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", ""),
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "finish_reason": "stop",
                "logprobs": None,
            }],
            "usage": {"prompt_tokens": n_in, "completion_tokens": n_out,
                      "total_tokens": n_in + n_out},
        }

    def error_body(self, status: int, message: str) -> Any:
        kinds = {429: "rate_limit_exceeded", 401: "invalid_api_key", 404: "model_not_found"}
        return {"error": {"message": message, "type": "invalid_request_error",
                          "param": None, "code": kinds.get(status, "server_error")}}


class FakeAnthropic(FakeServer):
    """POST /v1/messages."""

    kind = "anthropic"

    @property
    def base_url(self) -> str:
        return self.root

    def prompt_of(self, body: Any) -> str:
        users = [m["content"] for m in body.get("messages", []) if m.get("role") == "user"]
        content = users[-1] if users else ""
        if isinstance(content, list):
            content = "".join(b.get("text", "") for b in content)
        return content

    def reply(self, body: Any, path: str, text: str, prompt: str) -> Any:
        return {
            "id": f"msg_{len(self.requests)}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", ""),
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": len(prompt.split()) + 40,
                      "output_tokens": len(text.split())},
        }

    def error_body(self, status: int, message: str) -> Any:
        kinds = {429: "rate_limit_error", 401: "authentication_error", 404: "not_found_error",
                 529: "overloaded_error", 400: "invalid_request_error"}
        return {"type": "error", "error": {"type": kinds.get(status, "api_error"),
                                           "message": message}}


class FakeGemini(FakeServer):
    """POST /v1beta/models/{model}:generateContent."""

    kind = "gemini"

    @property
    def base_url(self) -> str:
        return self.root

    def prompt_of(self, body: Any) -> str:
        texts = [
            p.get("text", "")
            for c in body.get("contents", []) if c.get("role", "user") == "user"
            for p in c.get("parts", [])
        ]
        return texts[-1] if texts else ""

    def reply(self, body: Any, path: str, text: str, prompt: str) -> Any:
        n_in, n_out = len(prompt.split()) + 40, len(text.split())
        return {
            "candidates": [{
                "content": {"parts": [{"text": text}], "role": "model"},
                "finishReason": "STOP",
                "index": 0,
            }],
            "usageMetadata": {"promptTokenCount": n_in, "candidatesTokenCount": n_out,
                              "totalTokenCount": n_in + n_out},
            "modelVersion": path.split("/models/")[-1].split(":")[0],
        }

    def error_body(self, status: int, message: str) -> Any:
        statuses = {429: "RESOURCE_EXHAUSTED", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                    404: "NOT_FOUND", 400: "INVALID_ARGUMENT", 500: "INTERNAL",
                    503: "UNAVAILABLE"}
        return {"error": {"code": status, "message": message,
                          "status": statuses.get(status, "UNKNOWN")}}


def cached_prompts(home) -> set[str]:
    """Prompts whose answers the provider cache under FEYNTUNE_HOME `home` holds, read straight
    from its SQLite file (independently of providers.cache, and while another process writes)."""
    import sqlite3
    from pathlib import Path

    db = Path(home) / "providers" / "cache.sqlite"
    if not db.exists():
        return set()
    try:
        with sqlite3.connect(db) as conn:
            return {row[0] for row in conn.execute("SELECT prompt FROM completions")}
    except sqlite3.OperationalError:  # created but its table not yet
        return set()


SERVERS = {"openai": FakeOpenAI, "anthropic": FakeAnthropic, "gemini": FakeGemini}


def main() -> None:
    """Serve in a process of its own (the benchmark: the server must not share the client's
    GIL): prints the base URL, then serves until killed."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--kind", choices=sorted(SERVERS), default="openai")
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    with SERVERS[args.kind](delay=args.delay) as server:
        print(server.base_url, flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            sys.exit(0)


if __name__ == "__main__":
    main()


def provider_env(monkeypatch, tmp_path, minilm_path, keys: dict) -> None:
    """What a `feyntune eval --model provider` test runs under: a fresh $FEYNTUNE_HOME (the
    answer cache), MiniLM as the fast SemScore model, the given keys (provider -> (variable,
    key)) and no Google variable that would send Gemini elsewhere."""
    monkeypatch.setenv("FEYNTUNE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FEYNTUNE_SEMSCORE_MODEL", str(minilm_path))
    for name in ("GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI"):
        monkeypatch.delenv(name, raising=False)
    for env_name, key in keys.values():
        monkeypatch.setenv(env_name, key)
