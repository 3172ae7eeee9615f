"""What every `feyntune eval` spends on lm-eval's task index, with and without its bundled tasks: lm-eval's run command builds its TaskManager over ~14,700 bundled task
configurations on every run; `feyntune eval` builds it over the include paths only when every
task asked for is there (harness/evaluate/command.py, `own_task_index`).

Both routes are timed in this process, alternately, --repeats times each, and the medians are
printed with their ratio (this machine is noisy: compare ratios, not seconds).

    python bench/eval_overhead.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import lm_eval.tasks

    from harness.evaluate.command import own_task_index
    from harness.ground.subtasks import TASK_DIR

    run = argparse.Namespace(tasks="hepth_completion", include_path=[str(TASK_DIR)])

    def build() -> tuple[float, int]:
        started = time.perf_counter()
        manager = lm_eval.tasks.TaskManager(include_path=[str(TASK_DIR)])
        return time.perf_counter() - started, len(manager.all_tasks)

    def own() -> tuple[float, int]:  # the check of the asked tasks counted in
        started = time.perf_counter()
        with own_task_index(run):
            _, names = build()
        return time.perf_counter() - started, names

    build()  # imports and file caches warm for both
    seconds = {"lm-eval's full index": [], "feyntune eval": []}
    indexed = {}
    for _ in range(args.repeats):
        for name, route in (("lm-eval's full index", build), ("feyntune eval", own)):
            spent, names = route()
            seconds[name].append(spent)
            indexed[name] = names
    print(f"lm-eval's task index as `feyntune eval --tasks hepth_completion` builds it, "
          f"median of {args.repeats}:")
    for name, values in seconds.items():
        print(f"  {name:22s} {statistics.median(values):8.3f} s   {indexed[name]:>6,} names indexed")
    ratio = statistics.median(seconds["lm-eval's full index"]) / statistics.median(seconds["feyntune eval"])
    print(f"ratio full / feyntune eval: {ratio:.1f}")


if __name__ == "__main__":
    main()
