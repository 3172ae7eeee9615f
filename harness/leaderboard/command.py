"""`feyntune leaderboard`: tables, figures and a web page from every lm-eval run.

Reads every results_*.json / samples_*.jsonl under the runs folder (any depth), adds the
reference study's published figures as "reported" rows and imported human ratings, and writes
leaderboard.md, leaderboard.csv, figures/*.png and a self-contained index.html into --out.
Outputs depend only on the inputs (no generation time), so regenerating gives the same bytes.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from harness.ground.errors import FeynTuneError
from harness.ground.subtasks import RESULTS_DIR, RUNS_DIR

FIGURE_NAMES = ("perplexity.png", "entropy_vs_length.png", "semscore.png")


@dataclass(frozen=True)
class Built:
    out: Path
    measured_rows: int
    reported_rows: int
    skipped: list  # list of harness.runs.lmeval_outputs.Skip: whole files, and samples (Skip.line)
    notes: list[str]


def command_line(runs_dir: Path, out_dir: Path, ratings: Path | None = None,
                 judge_ratings: Path | None = None) -> str:
    """The `feyntune leaderboard` command that regenerates these files: the one that was run
    (paths inside the current folder relative to it, so a committed footer names no home)."""
    import os
    import shlex

    def shown(path: Path) -> str:
        absolute = Path(path).absolute()
        try:
            return os.path.relpath(absolute) if absolute.is_relative_to(Path.cwd()) else str(path)
        except ValueError:
            return str(path)

    argv = ["feyntune", "leaderboard", "--runs", shown(runs_dir), "--out", shown(out_dir)]
    if ratings is not None:
        argv += ["--ratings", shown(ratings)]
    if judge_ratings is not None:
        argv += ["--judge-ratings", shown(judge_ratings)]
    return shlex.join(argv)


def build(runs_dir: Path, out_dir: Path, ratings: Path | None = None,
          reported_file: Path | None = None, judge_ratings: Path | None = None) -> Built:
    """Write the leaderboard files for the runs under `runs_dir` into `out_dir`."""
    from harness.leaderboard import compare, figures, page, render, rows
    from harness.review import human_ratings
    from harness.runs.labels import run_labels
    from harness.study.registry import scan_runs

    runs_dir, out_dir = Path(runs_dir), Path(out_dir)
    if not runs_dir.is_dir():
        raise FeynTuneError(f"--runs {runs_dir} is not a folder" if runs_dir.exists() else
                            f"--runs {runs_dir}: no such folder (the lm-eval runs that "
                            "`feyntune eval` and `feyntune reproduce` write)")
    reported = rows.load_reported(reported_file or rows.REPORTED_FILE)
    scan = scan_runs(runs_dir, reported)
    if ratings is not None and not Path(ratings).is_file():
        raise FeynTuneError(f"--ratings {ratings} does not exist (write it with "
                            "`feyntune review import`)")
    ratings_path = ratings if ratings is not None else out_dir / human_ratings.DEFAULT_NAME
    rated, extras = human_ratings.load(ratings_path)
    rated_by_key = human_ratings.by_key(rated)
    judged = _judge_ratings(judge_ratings, out_dir)
    measured_rows, reported_rows = rows.build_rows(
        scan.runs, reported, rated_by_key,
        human_ratings.by_key(judged.get("models", [])) if judged else None)
    labels = run_labels(scan.runs)
    compare.compare_measured(measured_rows, scan.runs, labels, reported)
    on_reported = compare.fill_reported_human(reported_rows, rated, extras)
    notes = [f"{labels[run.run_id]}: {note}" for run in sorted(scan.runs, key=lambda r: r.run_id)
             for note in run.notes]
    notes += compare.agreement_notes(extras)
    notes += _unmatched_ratings([m for m in rated if m.get("study") not in on_reported],
                                scan.runs, labels)
    notes += _judge_notes(judged, {run.run_id for run in scan.runs} | set(labels.values()))
    skips = [(skip.path, skip.reason) for skip in scan.skips]
    source = reported.source

    pngs = {
        "perplexity.png": figures.perplexity_png(measured_rows, reported_rows),
        "entropy_vs_length.png": figures.entropy_length_png(scan.runs, labels),
        "semscore.png": figures.semscore_png(scan.runs, labels),
    }
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    for name, data in pngs.items():
        (out_dir / "figures" / name).write_bytes(data)
    (out_dir / "leaderboard.csv").write_text(render.to_csv(measured_rows, reported_rows),
                                             encoding="utf-8", newline="")
    (out_dir / "leaderboard.md").write_text(
        render.to_markdown(measured_rows, reported_rows, notes, skips, source,
                           command_line(runs_dir, out_dir, ratings, judge_ratings)),
        encoding="utf-8")
    (out_dir / "index.html").write_text(
        page.to_html(measured_rows, reported_rows, scan.runs, labels, pngs, notes, skips, source),
        encoding="utf-8")
    return Built(out_dir, len(measured_rows), len(reported_rows), list(scan.skips), notes)


def _unmatched_ratings(rated: list[dict], runs: list, labels: dict[str, str]) -> list[str]:
    """Ratings of texts that are no row here (the true continuations, a removed run): say so."""
    known = {run.run_id for run in runs} | set(labels.values())
    notes = []
    for entry in sorted(rated, key=lambda m: (str(m.get("model")), str(m.get("run")))):
        if entry.get("run") in known or entry.get("model") in known:
            continue
        mean = entry.get("mean")
        shown = f"{mean:.2f}" if isinstance(mean, (int, float)) else "n/a"
        notes.append(f"human rating of {entry.get('model')!s} (no measured row): {shown} "
                     f"(n={entry.get('n')})")
    return notes


def _judge_ratings(path: Path | None, out_dir: Path) -> dict | None:
    from harness.judge import judge_ratings

    if path is not None and not Path(path).is_file():
        raise FeynTuneError(f"--judge-ratings {path} does not exist (write it with "
                            "`feyntune judge`)")
    return judge_ratings.load(path if path is not None else out_dir / judge_ratings.DEFAULT_NAME)


def _judge_notes(judged: dict | None, known: set[str]) -> list[str]:
    """What the Judge column rests on, how far it agrees with people, and judged models that
    are no row here."""
    if not judged:
        return []
    from harness.judge import human_agreement

    judges = [j["judge"] for j in judged.get("judges", [])]
    rubric = (judged.get("rubric") or {}).get("version")
    failed = len(judged.get("failed", []))
    left_out = (f"{failed} completion(s) without a usable judge answer, left out" if failed
                else "every chosen completion scored")
    notes = [f"Judge column: {', '.join(judges)} on rubric {rubric}, seed {judged.get('seed')}; "
             + left_out]
    notes += [line.strip() for line in human_agreement.describe_judges(judged.get("between_judges"))]
    if judged.get("agreement"):
        notes += [line.strip() for line in human_agreement.describe(judged["agreement"], judges)]
    for entry in judged.get("models", []):
        if entry.get("run") not in known and entry.get("model") not in known:
            mean = entry.get("mean")
            shown = f"{mean:.2f}" if isinstance(mean, (int, float)) else "n/a"
            notes.append(f"judge rating of {entry.get('model')!s} (no measured row): {shown} "
                         f"(n={entry.get('documents')})")
    return notes


def _run(args) -> int:
    built = build(Path(args.runs), Path(args.out), Path(args.ratings) if args.ratings else None,
                  reported_file=Path(args.study) if args.study else None,
                  judge_ratings=Path(args.judge_ratings) if args.judge_ratings else None)
    for skip in built.skipped:
        print(f"feyntune leaderboard: skipped {skip}", file=sys.stderr)
    for note in built.notes:
        print(f"feyntune leaderboard: note: {note}", file=sys.stderr)
    samples = sum(1 for skip in built.skipped if skip.line is not None)
    skipped = f"{len(built.skipped) - samples} file(s)" + (f" and {samples} sample(s)" if samples else "")
    print(f"leaderboard: {built.measured_rows} measured run(s), {built.reported_rows} reported "
          f"row(s), {skipped} skipped -> {built.out}/leaderboard.md, "
          f"leaderboard.csv, index.html, figures/{{{','.join(FIGURE_NAMES)}}}")
    return 0


def register(sub) -> None:
    parser = sub.add_parser(
        "leaderboard",
        help="build the leaderboard (md, csv, figures, html) from lm-eval runs",
        description="Read every lm-eval results_*.json and samples_*.jsonl under --runs and "
        "write leaderboard.md, leaderboard.csv, figures/*.png and index.html into --out, with "
        "the reference study's published figures as reported rows.",
    )
    parser.add_argument("--runs", default=RUNS_DIR,
                        help=f"folder of lm-eval output folders (default: {RUNS_DIR})")
    parser.add_argument("--out", default=RESULTS_DIR, help=f"output folder (default: {RESULTS_DIR})")
    parser.add_argument("--ratings", default=None,
                        help="human ratings from `feyntune review import` "
                        "(default: OUT/human_ratings.json when present)")
    parser.add_argument("--judge-ratings", default=None,
                        help="LLM judge ratings from `feyntune judge` "
                        "(default: OUT/judge_ratings.json when present)")
    parser.add_argument("--study", default=None,
                        help="the study file whose published figures are the reported rows "
                        "(default: the reference study, studies/reference.yaml)")
    parser.set_defaults(func=_run)
