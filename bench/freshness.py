"""Benchmark: the cost of `feyntune data build --fresh-after` against the same build without it.

Replicates the shared arXiv sample to >= 200,000 records (bench/curate.py's snapshot), then runs
`feyntune data build` (all ten sets) without and with `--fresh-after 2024-12-31`, alternating,
each in its own process. The fresh cut re-reads the kept hep-th records' date fields once, so
the figure to watch is the ratio of wall times (target: <= 1.10, i.e. at most 10% extra).

    .venv/bin/python bench/freshness.py [--records 200000] [--repeats 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _curate_bench():
    spec = importlib.util.spec_from_file_location("bench_curate", REPO / "bench" / "curate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _date_pass_seconds(snapshot: Path) -> float:
    """Time of the step --fresh-after adds: dating and moving the kept hep-th records."""
    import time

    from finetune import curate
    from finetune import snapshot as snapshot_io
    from harness.ground import freshness

    config = curate.load_config()
    _, categories = config.closure(list(config.sets))
    collection = curate.collect(snapshot_io.locate(snapshot), categories, progress=False)
    rows = {c: curate.split_rows(collection.by_category[c]) for c in categories}
    started = time.perf_counter()
    curate.move_fresh(collection, rows, freshness.parse_cut("2024-12-31"), config.seed)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    curate_bench = _curate_bench()
    feyntune = str(Path(sys.executable).with_name("feyntune"))
    with tempfile.TemporaryDirectory(prefix="bench-fresh-") as tmp:
        tmp = Path(tmp)
        snapshot = tmp / "snapshot.jsonl"
        lines = curate_bench.make_snapshot(snapshot, args.records)
        print(f"snapshot: {lines:,} records, {snapshot.stat().st_size / 1e6:.0f} MB")
        times: dict[str, list[float]] = {"plain": [], "fresh": []}
        peaks: dict[str, list[int]] = {"plain": [], "fresh": []}
        for _ in range(args.repeats):
            for kind in ("plain", "fresh"):
                out = tmp / kind
                cmd = [feyntune, "data", "build", "--snapshot", str(snapshot), "--out", str(out),
                       "--no-progress"]
                if kind == "fresh":
                    cmd += ["--fresh-after", "2024-12-31"]
                wall, peak = curate_bench.measured(cmd)
                times[kind].append(wall)
                peaks[kind].append(peak)
        fresh = json.loads((tmp / "fresh" / "manifest.json").read_text())["fresh"]
        shutil.rmtree(tmp / "plain", ignore_errors=True)
        date_pass = _date_pass_seconds(snapshot)
    best = {kind: min(values) for kind, values in times.items()}
    print(f"fresh split: {fresh['records']:,} records moved "
          f"(train {fresh['moved_from']['train']:,}, validation {fresh['moved_from']['validation']:,}, "
          f"test {fresh['moved_from']['test']:,}); dates by source {fresh['dates_by_source']}")
    for kind in ("plain", "fresh"):
        print(f"{kind:6s} best of {args.repeats}: {best[kind]:6.2f} s  peak RSS "
              f"{max(peaks[kind]) / 2**20:,.0f} MiB  (runs: {', '.join(f'{t:.2f}' for t in times[kind])})")
    ratio = best["fresh"] / best["plain"]
    print(f"ratio fresh/plain wall time: {ratio:.3f} (target <= 1.10); "
          f"memory ratio {max(peaks['fresh']) / max(peaks['plain']):.3f}")
    print("  (the fresh build writes fewer records: the moved ones leave every mix that holds "
          "hep-th, which can outweigh the date pass)")
    print(f"date pass alone (move_fresh, in process): {date_pass:.3f} s = "
          f"{date_pass / best['plain']:.3f} of the plain build")
    return 0


if __name__ == "__main__":
    sys.exit(main())
