"""Persistent answers: one SQLite file under $FEYNTUNE_HOME, each answer committed the moment
it arrives, so a crash or Ctrl-C loses nothing that was paid for."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from harness.ground.errors import FeynTuneError
from harness.ground.home import feyntune_home
from providers.base import Completion, GenerationSettings

SCHEMA_VERSION = 1


def default_path() -> Path:
    return feyntune_home() / "providers" / "cache.sqlite"


def cache_key(
    identity: dict[str, str],
    instruction_version: str,
    settings: GenerationSettings,
    prompt: str,
    sample_index: int,
) -> str:
    payload = {
        "schema": SCHEMA_VERSION,
        "identity": identity,
        "instruction": instruction_version,
        "settings": settings.as_dict(),
        "prompt": prompt,
        "sample": int(sample_index),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()


class CompletionCache:
    """Thread-safe: one connection guarded by a lock (writes are tiny next to a request)."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path else default_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            # WAL + NORMAL: a committed answer survives the process being killed.
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=10000")
            self._db.execute(
                """CREATE TABLE IF NOT EXISTS completions (
                    key TEXT PRIMARY KEY,
                    provider TEXT NOT NULL, model TEXT NOT NULL, identity TEXT NOT NULL,
                    instruction_version TEXT NOT NULL, settings TEXT NOT NULL,
                    prompt TEXT NOT NULL, sample_index INTEGER NOT NULL,
                    completion TEXT NOT NULL, created REAL NOT NULL)"""
            )
        except sqlite3.Error as err:
            raise FeynTuneError(f"cannot open the provider cache {self.path}: {err}") from None
        self._lock = threading.Lock()

    def get(self, key: str) -> Completion | None:
        with self._lock:
            row = self._db.execute(
                "SELECT completion FROM completions WHERE key = ?", (key,)
            ).fetchone()
        return Completion(**json.loads(row[0])) if row else None

    def get_many(self, keys: list[str]) -> dict[str, Completion]:
        found: dict[str, Completion] = {}
        unique = list(dict.fromkeys(keys))
        with self._lock:
            for start in range(0, len(unique), 500):  # SQLite's parameter limit
                chunk = unique[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for key, blob in self._db.execute(
                    f"SELECT key, completion FROM completions WHERE key IN ({marks})", chunk
                ):
                    found[key] = Completion(**json.loads(blob))
        return found

    def put(
        self,
        key: str,
        identity: dict[str, str],
        instruction_version: str,
        settings: GenerationSettings,
        prompt: str,
        sample_index: int,
        completion: Completion,
    ) -> None:
        row: tuple[Any, ...] = (
            key, identity["provider"], identity["model"], json.dumps(identity, sort_keys=True),
            instruction_version, json.dumps(settings.as_dict(), sort_keys=True), prompt,
            int(sample_index), json.dumps(completion.as_dict()), time.time(),
        )
        try:
            with self._lock:
                self._db.execute(
                    "INSERT OR REPLACE INTO completions VALUES (?,?,?,?,?,?,?,?,?,?)", row
                )
        except sqlite3.Error as err:
            raise FeynTuneError(f"cannot store an answer in {self.path}: {err}") from None

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM completions").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
