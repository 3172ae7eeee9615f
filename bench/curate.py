"""Benchmark: `feyntune data build` against the reference's pandas approach, same run, same input.

Builds a snapshot of >= 200,000 records by replicating the shared arXiv sample under new ids,
then runs, each in its own process so time and peak memory are its own:
- feyntune: `feyntune data build` (all ten sets);
- reference: `pandas.read_json(lines=True)` of the whole file, filtering on the frame, then the
  splits and mixes with datasets and `to_json` per split (how the reference study worked; the
  independent implementation in tests/curate_reference.py).
Prints wall time and peak RSS of both, the ratios (target: >= 3x faster, <= 1/3 of the memory),
checks that both wrote the same ids in the same order, and projects to the full snapshot.

    .venv/bin/python bench/curate.py [--records 200000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = Path(os.environ.get("FEYNTUNE_SHARED_DATA", REPO.parent / "shared" / "data")) / \
    "arxiv" / "arxiv-sample.jsonl"
SPLITS = ("train", "validation", "test")
FULL_LINES = 2_542_615        # Kaggle snapshot of Aug 2024 (docs/reference.md)
FULL_BYTES = 4.5 * 1024**3    # its size, about 4.5 GB


def make_snapshot(path: Path, records: int) -> int:
    """Replicate the sample under new ids ("r<copy>-<id>") until `records` lines exist."""
    lines = SAMPLE.read_bytes().splitlines(keepends=True)
    prefix = b'{"id": "'
    assert all(line.startswith(prefix) for line in lines)
    copies = math.ceil(records / len(lines))
    with open(path, "wb") as out:
        for copy in range(copies):
            tag = f"r{copy}-".encode()
            out.writelines(prefix + tag + line[len(prefix):] for line in lines)
    return copies * len(lines)


def measured(cmd: list[str]) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes) of one child process; os.wait4 reports that child alone."""
    started = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    stderr = child.stderr.read().decode(errors="replace")
    child.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{stderr[-3000:]}")
    return wall, usage.ru_maxrss * 1024  # Linux reports KiB


def reference_worker(snapshot: str, out: str) -> None:
    """The reference study's approach: the whole snapshot in one pandas frame, then datasets
    (tests/curate_reference.py, the independent implementation the tests hold curation to)."""
    sys.path.insert(0, str(REPO / "tests"))
    import curate_reference as reference

    df = reference.load_frame(snapshot)
    base = reference.base_datasets(df, columns=None)  # every field, as the study kept them
    del df
    for name, splits in reference.mixes(base).items():
        Path(out, name).mkdir(parents=True, exist_ok=True)
        for split, ds in splits.items():
            ds.to_json(Path(out, name, f"{split}.jsonl"), lines=True, force_ascii=False)


def ids_of(path: Path) -> list[str]:
    with open(path, "rb") as handle:
        return [json.loads(line)["id"] for line in handle]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--keep", type=Path, help="keep the snapshot and outputs here")
    parser.add_argument("--reference-worker", nargs=2, metavar=("SNAPSHOT", "OUT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reference_worker:
        reference_worker(*args.reference_worker)
        return

    work = Path(args.keep or tempfile.mkdtemp(prefix="feyntune-bench-curate-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        snapshot = work / "snapshot.jsonl"
        lines = make_snapshot(snapshot, args.records)
        size = snapshot.stat().st_size
        print(f"snapshot: {lines:,} records, {size / 1e6:,.0f} MB "
              f"({SAMPLE.name} replicated under new ids)")
        feyntune = [str(Path(sys.executable).with_name("feyntune")), "data", "build",
                    "--no-progress", "--snapshot"]
        # Fixed cost (interpreter, imports) measured on the sample itself, for the projection.
        base_time, base_rss = measured(feyntune + [str(SAMPLE), "--out", str(work / "base")])
        ours_time, ours_rss = measured(feyntune + [str(snapshot), "--out", str(work / "ours")])
        ref_time, ref_rss = measured([sys.executable, __file__, "--reference-worker",
                                      str(snapshot), str(work / "reference")])

        manifest = json.loads((work / "ours" / "manifest.json").read_text())
        kept = sum(c["kept"] for c in manifest["records"]["by_category"].values())
        same = all(ids_of(work / "ours" / n / f"{s}.jsonl")
                   == ids_of(work / "reference" / n / f"{s}.jsonl")
                   for n in manifest["sets"] for s in SPLITS)
        written = sum(v["splits"][s]["total"] for v in manifest["sets"].values() for s in SPLITS)

        mib = 1024**2
        print(f"{'':10s} {'wall s':>8s} {'peak RSS MiB':>13s}")
        print(f"{'feyntune':10s} {ours_time:8.1f} {ours_rss / mib:13,.0f}")
        print(f"{'reference':10s} {ref_time:8.1f} {ref_rss / mib:13,.0f}")
        print(f"speed-up {ref_time / ours_time:.1f}x (target >= 3x); "
              f"memory {ours_rss / ref_rss:.3f} of the reference (target <= 0.333)")
        print(f"feyntune: {lines / ours_time:,.0f} records/s overall, {kept:,} records kept, "
              f"{written:,} written to the ten sets; same ids in the same order as the "
              f"reference in every set and split: {same}")

        # Projection: time and the reference's memory scale with the input bytes; our memory is
        # the fixed part plus the kept records (held as output lines), assumed the same share of
        # the snapshot as here.
        scale = FULL_BYTES / size
        ours_full_t = base_time + (ours_time - base_time) * scale
        ref_full_t = ref_time * scale
        ours_full_m = base_rss + (ours_rss - base_rss) * scale
        ref_full_m = ref_rss * scale
        print(f"projection for the full snapshot ({FULL_LINES:,} records, 4.5 GB, x{scale:.1f}): "
              f"feyntune ~{ours_full_t / 60:.1f} min and ~{ours_full_m / 1024**3:.1f} GiB; "
              f"reference ~{ref_full_t / 60:.1f} min and ~{ref_full_m / 1024**3:.1f} GiB")
        if not same:
            sys.exit("feyntune and the reference disagree on the split ids")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
