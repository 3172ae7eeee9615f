"""Streaming the Kaggle arXiv metadata snapshot (JSON lines; plain, `.gz` or `.zip`).

The real snapshot is 4.5 GB, so nothing here holds more than one line at a time. Lines are
yielded as raw bytes: the curation decides cheaply on the bytes whether a line can matter before
it pays for decoding and JSON parsing.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import threading
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from harness.ground.digest import sha256_file
from harness.ground.errors import FeynTuneError

_READ_BUFFER = 1 << 20
_JSON_MEMBER_SUFFIXES = (".json", ".jsonl")


@dataclass(frozen=True)
class SnapshotFile:
    path: Path
    size_bytes: int
    compression: str  # "none", "gzip" or "zip"


def locate(path: str | os.PathLike) -> SnapshotFile:
    """Check the snapshot exists and tell its compression by content (not only by name)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FeynTuneError(
            f"snapshot {path} not found; download the Kaggle arXiv metadata "
            "(arxiv-metadata-oai-snapshot.json, or its .zip/.gz) and pass its path to --snapshot"
        )
    if not path.is_file():
        raise FeynTuneError(f"snapshot {path} is not a file")
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic[:2] == b"\x1f\x8b":
        compression = "gzip"
    elif magic == b"PK\x03\x04":
        compression = "zip"
    else:
        compression = "none"
    return SnapshotFile(path=path, size_bytes=path.stat().st_size, compression=compression)


class BackgroundSha256:
    """Hash the input file on a thread while the main loop parses it.

    hashlib releases the GIL on large buffers, so this costs about one extra read of the file
    (from the page cache) instead of a second pass over the snapshot after the build. The
    thread is a daemon: a build that fails early does not wait for a 4.5 GB hash.
    """

    def __init__(self, path: Path):
        self._path = path
        self._digest: str | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._digest = sha256_file(self._path)
        except OSError as err:
            self._error = err

    def result(self) -> str:
        self._thread.join()
        if self._error is not None:
            raise FeynTuneError(f"cannot hash {self._path}: {self._error}")
        return self._digest


def _zip_member(archive: zipfile.ZipFile, path: Path) -> zipfile.ZipInfo:
    members = [info for info in archive.infolist() if not info.is_dir()]
    if len(members) != 1:
        members = [info for info in members if info.filename.lower().endswith(_JSON_MEMBER_SUFFIXES)]
    if len(members) != 1:
        names = ", ".join(info.filename for info in archive.infolist()) or "none"
        raise FeynTuneError(
            f"{path}: expected one JSON-lines file in the zip archive, found members: {names}"
        )
    return members[0]


class LineStream:
    """Iterate the snapshot's lines as bytes; `position()` is how far into the file we are."""

    def __init__(self, snapshot: SnapshotFile):
        self.snapshot = snapshot
        self._raw: io.BufferedReader | None = None
        self._stream: io.BufferedIOBase | None = None
        self.lines_read = 0

    def __enter__(self) -> LineStream:  # noqa: PYI034 (py3.10: no typing.Self)
        snap = self.snapshot
        self._raw = open(snap.path, "rb", buffering=_READ_BUFFER)
        try:
            if snap.compression == "gzip":
                self._stream = gzip.GzipFile(fileobj=self._raw, mode="rb")
            elif snap.compression == "zip":
                archive = zipfile.ZipFile(self._raw)
                member = archive.open(_zip_member(archive, snap.path))
                # ZipExtFile's readline is pure Python; a C buffered reader on top is much faster.
                self._stream = io.BufferedReader(member, buffer_size=_READ_BUFFER)
            else:
                self._stream = self._raw
        except zipfile.BadZipFile as err:
            self._raw.close()
            raise FeynTuneError(f"{snap.path}: not a readable zip archive ({err})") from err
        return self

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(Exception):
            if self._stream is not None and self._stream is not self._raw:
                self._stream.close()
        if self._raw is not None:
            self._raw.close()

    def position(self) -> int:
        """Bytes of the (possibly compressed) file consumed so far, for the progress bar."""
        try:
            return self._raw.tell()
        except (OSError, ValueError):
            return 0

    def __iter__(self) -> Iterator[bytes]:
        try:
            for line in self._stream:
                self.lines_read += 1
                yield line
        except (EOFError, OSError, zlib.error, zipfile.BadZipFile) as err:
            # A cut-off download: refusing is better than mixes silently built from part of it.
            raise FeynTuneError(
                f"{self.snapshot.path}: the {self.snapshot.compression} stream is corrupt or "
                f"truncated after {self.lines_read:,} lines ({err}); download the snapshot again"
            ) from err
