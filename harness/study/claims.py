"""One owner per run folder: a claim file, so that two runs (two plain runs, two SLURM
submissions, or jobs of both) never evaluate the same model, or train the same adapter, at the
same time.

The claim is a file created with O_CREAT | O_EXCL, which is atomic on local disks and on NFS
(v3 and later), where fcntl locks are often not. It names its owner (host, process, SLURM job,
start time) and a random token; the owner refreshes its modification time every
HEARTBEAT_SECONDS while it works. A claim is stale, and may be broken by another run, when its
owner is a process of this host that no longer exists, or when it has not been refreshed for
STALE_SECONDS (an owner on another host that was killed, e.g. by a SLURM time limit). Releasing
or breaking a claim removes only a claim file, and only after checking its token: a run never
deletes a claim it did not write unless that claim is stale.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from harness.ground.errors import FeynTuneError

CLAIM_FILE = ".feyntune-claim"  # a dot file: the runs reader skips it
HEARTBEAT_SECONDS = 60.0
STALE_SECONDS = 600.0


class Claimed(FeynTuneError):
    """Another live run owns the model: its work, not a failure of this run."""


def owner_record() -> dict:
    """Who this process is, as written into its claims."""
    job = os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID")
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array:
        job = f"{array}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    return {"host": socket.gethostname(), "pid": os.getpid(), "job": job,
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "token": uuid.uuid4().hex}


def describe_owner(record: dict) -> str:
    job = f", job {record['job']}" if record.get("job") else ""
    return f"{record.get('host', '?')} pid {record.get('pid', '?')}{job}, since " \
           f"{record.get('since', '?')}"


def read_claim(path: Path) -> dict | None:
    """The claim's owner record; None when there is no claim. A claim being written (empty or
    half-written) reads as an owner without details, which is live until it turns stale."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        record = json.loads(text)
    except ValueError:
        record = {}
    return record if isinstance(record, dict) else {}


def is_stale(path: Path, record: dict, now: float | None = None) -> bool:
    """The stale-claim rule (module docstring)."""
    try:
        age = (time.time() if now is None else now) - path.stat().st_mtime
    except FileNotFoundError:
        return False  # released meanwhile: nothing to break
    if age > STALE_SECONDS:
        return True
    if record.get("host") != socket.gethostname() or not isinstance(record.get("pid"), int):
        return False
    try:
        os.kill(record["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def holder(folder: Path) -> dict | None:
    """The live owner of a run folder's claim, if any (a stale claim has none)."""
    path = Path(folder) / CLAIM_FILE
    record = read_claim(path)
    if record is None or is_stale(path, record):
        return None
    return record


def _create(path: Path, record: dict) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(record))
    return True


def _break_stale(path: Path, stale: dict, token: str) -> None:
    """Move a stale claim aside and remove it; if the file moved was not the one judged stale
    (its owner replaced it meanwhile), put it back."""
    aside = path.with_name(f"{CLAIM_FILE}.{token}.stale")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return  # another run broke it first
    moved = read_claim(aside) or {}
    if moved.get("token") == stale.get("token"):
        aside.unlink()
        return
    try:
        os.link(aside, path)
    except FileExistsError:
        pass  # a third run claimed meanwhile; the moved owner keeps working, its heartbeat stops
    aside.unlink()


def _heartbeat(path: Path, token: str, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_SECONDS):
        record = read_claim(path)
        if not record or record.get("token") != token:
            return  # no longer ours: never refresh another run's claim
        try:
            os.utime(path)
        except OSError:
            return


@contextmanager
def claim(folder: Path, doing: str = "evaluated"):
    """Hold `folder`'s claim for the duration of the block; Claimed when another live run holds
    it (`doing`: what that run does to the folder, for the message). A stale claim is broken
    (once) and taken over."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CLAIM_FILE
    record = owner_record()
    for _ in range(2):
        if _create(path, record):
            break
        other = read_claim(path)
        if other is None:
            continue  # released between our attempt and the read
        if not is_stale(path, other):
            raise Claimed(f"{folder.name} is being {doing} by another run "
                          f"({describe_owner(other)}; claim {path})")
        _break_stale(path, other, record["token"])
    else:
        raise Claimed(f"{folder.name}: could not take the claim {path}; another run is taking it")
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(path, record["token"], stop), daemon=True)
    beat.start()
    try:
        yield record
    finally:
        stop.set()
        beat.join()
        current = read_claim(path)
        if current and current.get("token") == record["token"]:
            path.unlink()
