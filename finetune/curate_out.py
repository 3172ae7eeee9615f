"""The output folder of `feyntune data build`, written without destroying what the build did not write.

The folder holds `manifest.json` (its `format` key says a build wrote it), one folder per set,
`hepth-fresh/` when asked for, and two hidden entries of the build's own: LOCK_NAME and staging
folders named STAGE_PREFIX*. A build
1. takes an exclusive lock on LOCK_NAME (the kernel drops it when the process dies, even on
   SIGKILL), so a second build into the same folder fails at once instead of losing one result;
2. refuses a manifest.json without the format marker, a non-empty folder without a manifest, and
   any set folder the manifest does not list as written by a build or holding other files;
3. removes the staging folders of killed builds (it holds the lock, so their owner is dead);
4. writes the new set folders into a staging folder, lists them as `interrupted` in the manifest,
   swaps each in with renames, and then writes the merged manifest: earlier sets and unrelated
   files stay, and a build killed half-way leaves a manifest that says which folders to rebuild.
Folders and files are created with the process umask.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

from harness.ground.errors import FeynTuneError

FORMAT = "feyntune-data-build/1"
MANIFEST = "manifest.json"
LOCK_NAME = ".feyntune-build.lock"
STAGE_PREFIX = ".feyntune-stage-"


def is_own_entry(name: str) -> bool:
    return name == LOCK_NAME or name.startswith(STAGE_PREFIX)


def read_manifest(out: Path) -> dict[str, Any] | None:
    """The manifest of a previous build in `out`, None when there is none; anything that is not
    one of ours is refused."""
    path = out / MANIFEST
    if not path.exists():
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise FeynTuneError(f"cannot read {path}: {err}") from None
    try:
        manifest = json.loads(text)
    except ValueError:  # not JSON (or not UTF-8): not one of ours
        manifest = None
    if isinstance(manifest, dict) and manifest.get("format") == FORMAT:
        return manifest
    if isinstance(manifest, dict) and manifest.get("command") == "feyntune data build":
        raise FeynTuneError(
            f"--out {out} was written by an earlier feyntune whose mixes s2, s4-s6, s9 and s10 "
            "differ from the reference study's; build into a new folder (and remove that one "
            "yourself once you no longer need it)")
    raise FeynTuneError(f"--out {out} holds a {MANIFEST} that `feyntune data build` did not "
                        f"write (no \"format\": \"{FORMAT}\"); choose a new or empty folder")


def _owned(manifest: dict[str, Any] | None) -> set[str]:
    if manifest is None:
        return set()
    names = set(manifest.get("sets") or {}) | set(manifest.get("interrupted") or [])
    if manifest.get("fresh"):
        names.add(manifest["fresh"].get("path", "").split("/")[0])
    return names


def refuse_foreign(out: Path) -> dict[str, Any] | None:
    """The previous build's manifest of an existing folder; a folder that is not a build's
    output (and not empty) is refused before anything is written into it."""
    manifest = read_manifest(out)
    if manifest is None:
        foreign = sorted(p.name for p in out.iterdir() if not is_own_entry(p.name))
        if foreign:
            raise FeynTuneError(
                f"--out {out} is a non-empty folder that is not a `feyntune data build` output "
                f"(no {MANIFEST}; it holds {', '.join(foreign[:3])}"
                f"{', ...' if len(foreign) > 3 else ''}); choose a new or empty folder")
    return manifest


def check_replaceable(out: Path, manifest: dict[str, Any] | None,
                      folders: dict[str, tuple[str, ...]]) -> None:
    """Refuse unless every folder to be replaced (name -> the files a build writes in it) is
    absent, or listed in the manifest and holding only those files."""
    owned = _owned(manifest)
    for name, files in folders.items():
        path = out / name
        if not path.exists() and not path.is_symlink():
            continue
        if name not in owned or path.is_symlink() or not path.is_dir():
            raise FeynTuneError(
                f"{path} exists but {out / MANIFEST} does not list it as written by `feyntune "
                "data build`; move it away or choose another --out")
        extra = sorted(p.name for p in path.iterdir() if p.name not in files)
        if extra:
            raise FeynTuneError(
                f"{path} holds {', '.join(extra[:3])}{', ...' if len(extra) > 3 else ''}, which "
                "`feyntune data build` did not write; move it away before rebuilding "
                f"{name}")


def merged(old: dict[str, Any] | None, new: dict[str, Any], order: list[str]) -> dict[str, Any]:
    """The manifest after a build: this build's description, its sets replacing the same names
    of earlier builds, the earlier sets kept (each set entry says what it was built from)."""
    result = dict(new)
    old = old or {}
    written = set(new["sets"])
    sets = {**(old.get("sets") or {}), **new["sets"]}
    rank = {name: i for i, name in enumerate(order)}
    result["sets"] = dict(sorted(sets.items(), key=lambda kv: (rank.get(kv[0], len(rank)),
                                                                kv[0])))
    fresh_dir = (new.get("fresh") or {}).get("path", "").split("/")[0]
    interrupted = [n for n in old.get("interrupted") or [] if n not in written and n != fresh_dir]
    if interrupted:
        result["interrupted"] = interrupted
    else:
        result.pop("interrupted", None)
    if "fresh" not in new and old.get("fresh"):
        # The earlier fresh split stays; sets rebuilt now without the cut may hold its records.
        kept = dict(old["fresh"])
        kept["excluded_from_sets"] = [n for n in kept.get("excluded_from_sets", [])
                                      if n not in written]
        result["fresh"] = kept
    return result


def _pending(old: dict[str, Any] | None, names: list[str]) -> dict[str, Any]:
    """The manifest while `names` are swapped in: they are listed as interrupted, not as sets."""
    base = dict(old or {"format": FORMAT, "command": "feyntune data build"})
    base["sets"] = {k: v for k, v in (base.get("sets") or {}).items() if k not in names}
    if base.get("fresh") and base["fresh"].get("path", "").split("/")[0] in names:
        del base["fresh"]
    base["interrupted"] = list(dict.fromkeys([*(base.get("interrupted") or []), *names]))
    return base


def _write_json(path: Path, data: dict[str, Any], stage: Path) -> None:
    tmp = stage / f"{path.name}.tmp"
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class OutputFolder:
    """`with OutputFolder(out) as folder:` holds the lock and the checked previous manifest."""

    def __init__(self, out: Path):
        self.out = out
        self.manifest: dict[str, Any] | None = None
        self._fd: int | None = None
        self._created = False
        self._lock_created = False
        self._stage: Path | None = None

    def __enter__(self) -> OutputFolder:  # noqa: PYI034 (py3.10: no typing.Self)
        out = self.out
        if out.is_symlink() and not out.exists() or out.exists() and not out.is_dir():
            raise FeynTuneError(f"--out {out} exists and is not a folder")
        try:
            if out.is_dir():
                refuse_foreign(out)
            else:
                out.mkdir(parents=True, exist_ok=True)  # a concurrent build may make it too
                self._created = True
            try:
                self._lock()
                self.manifest = refuse_foreign(out)  # again, now that no other build can write
                for stale in out.glob(STAGE_PREFIX + "*"):
                    shutil.rmtree(stale, ignore_errors=True)
            except BaseException:
                self._release(failed=True)
                raise
        except OSError as err:
            raise FeynTuneError(f"cannot use --out {out}: {err}") from err
        return self

    def _lock(self) -> None:
        path = self.out / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
            self._lock_created = True
        except FileExistsError:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # A failed first build removes its folder; a lock taken on that removed file is void.
            if os.fstat(fd).st_ino != os.stat(path).st_ino:
                raise BlockingIOError
        except (BlockingIOError, FileNotFoundError):
            os.close(fd)
            raise FeynTuneError(f"another `feyntune data build` is writing {self.out} right now "
                                f"(it holds {path}); wait for it to finish or choose another "
                                "--out") from None
        self._fd = fd

    def stage(self) -> Path:
        """A new staging folder inside `out` for the files of this build."""
        self._stage = self.out / f"{STAGE_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        self._stage.mkdir()
        (self._stage / "new").mkdir()
        return self._stage / "new"

    def commit(self, new_manifest: dict[str, Any], order: list[str]) -> dict[str, Any]:
        """Swap the staged folders in and write the merged manifest; returns it."""
        stage = self._stage
        names = sorted(p.name for p in (stage / "new").iterdir())
        _write_json(self.out / MANIFEST, _pending(self.manifest, names), stage)
        old = stage / "old"
        old.mkdir()
        for name in names:
            target = self.out / name
            if target.exists():
                target.rename(old / name)
            (stage / "new" / name).rename(target)
        final = merged(self.manifest, new_manifest, order)
        _write_json(self.out / MANIFEST, final, stage)
        self.manifest = final
        return final

    def _release(self, failed: bool) -> None:
        if self._stage is not None:
            shutil.rmtree(self._stage, ignore_errors=True)
            self._stage = None
        if failed and self._lock_created and self._fd is not None:
            # A build that wrote nothing leaves no trace: not its lock, not the folder it made.
            with contextlib.suppress(OSError):
                if not (self.out / MANIFEST).exists():
                    (self.out / LOCK_NAME).unlink()
                if self._created:
                    self.out.rmdir()  # only when empty
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __exit__(self, exc_type, *exc) -> None:
        self._release(failed=exc_type is not None)
