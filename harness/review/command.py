"""`feyntune review build|import`: blind human rating of completions, folded into the leaderboard.

    feyntune review build --runs results/runs --n 10 --out review/
        -> review/review.html (send to raters) and review/key.json (keep it; it names the models)
    feyntune review import ratings-*.csv --key review/key.json
        -> results/human_ratings.json, shown by `feyntune leaderboard`

An existing review is never overwritten without --force: a build that would change it writes
the new review beside it (review-ID.html, key-ID.json).
Imports accumulate in the ratings file; a rater's re-import of a review replaces only that
rater's earlier rows of that review.
"""

from __future__ import annotations

import sys
from pathlib import Path

from harness.ground.subtasks import RESULTS_DIR, RUNS_DIR


def _build(args) -> int:
    from harness.review.blind_page import build_review

    page, key, messages = build_review(
        Path(args.runs), Path(args.out), n=args.n, models=args.models, seed=args.seed,
        include_truth=args.truth, key_path=Path(args.key) if args.key else None,
        force=args.force)
    for message in messages:
        print(f"feyntune review build: {message}", file=sys.stderr)
    print(f"review page: {page} (send it to the raters)\n"
          f"key: {key} (keep it apart: it maps the labels back to the models)")
    return 0


def _import(args) -> int:
    from harness.ground.errors import FeynTuneError
    from harness.review import rating_import, uncertainty

    result, _ = rating_import.read_rating_files(args.files, args.key, "review import")
    if not result.ratings:
        raise FeynTuneError(f"no usable rating in {len(args.files)} file(s); "
                            f"{len(result.errors)} problem(s) reported above")
    merged = rating_import.merge(rating_import.earlier_ratings(Path(args.out)), result.ratings)
    models = rating_import.summarise(merged.ratings)
    models, extras = uncertainty.annotate(models, merged.ratings)
    rating_import.write(models, Path(args.out), merged.ratings, extras)
    print(f"imported {result.rows} rating row(s) from {result.files} file(s), "
          f"{len(result.errors)} skipped; {len(models)} model(s) -> {args.out}")
    print(f"  {merged.added} row(s) added, {merged.replaced} earlier row(s) replaced, "
          f"{merged.kept} earlier row(s) kept")
    for review, rater in merged.replaced_units:
        where = f"review {review}" if review else "the reference layout"
        print(f"  replaced: rater {rater!r} of {where} (their earlier rows, by this import)")
    for model in sorted(models, key=lambda m: m["model"]):
        mean = "n/a" if model["mean"] is None else f"{model['mean']:.2f}"
        print(f"  {model['model']}: overall {mean}{uncertainty.interval_text(model)} (n={model['n']}, "
              f"raters={model['raters']})")
    for category in extras.get("categories", []):
        print(f"  category {category['category']}: {category['mean']:.2f}{uncertainty.interval_text(category)} "
              f"(n={category['n']})")
    alpha = extras["agreement"]
    print(f"  agreement: Krippendorff's alpha (interval) "
          f"{'n/a' if alpha['alpha'] is None else format(alpha['alpha'], '.3f')} across "
          f"{alpha['raters']} rater(s) on {alpha['items']} text(s) every rater scored"
          + (f" ({alpha['why']})" if alpha.get("why") else ""))
    return 0


def register(sub) -> None:
    from harness.review import human_ratings
    from harness.review.blind_page import DEFAULT_SEED

    parser = sub.add_parser("review", help="blind human review of completions (build|import)",
                            description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="review_command", required=True, metavar="build|import")

    build = commands.add_parser(
        "build", help="write a blind review page and its key",
        description="Pick N documents that every chosen model completed and write one "
        "self-contained page showing each prompt with the completions under neutral labels "
        "in a shuffled order, plus a key file mapping labels to models.")
    build.add_argument("--runs", default=RUNS_DIR, help=f"lm-eval runs (default: {RUNS_DIR})")
    build.add_argument("--n", type=int, default=10, help="documents to rate (default: 10)")
    build.add_argument("--models", nargs="+", default=None, metavar="MODEL",
                       help="leaderboard labels or run paths (default: every run with completions)")
    build.add_argument("--seed", type=int, default=DEFAULT_SEED,
                       help=f"choice and order seed (default: {DEFAULT_SEED})")
    build.add_argument("--no-truth", dest="truth", action="store_false",
                       help="leave the true continuation out (by default it is one hidden text)")
    build.add_argument("--out", default="review", help="output folder (default: review)")
    build.add_argument("--key", default=None, help="key file (default: OUT/key.json)")
    build.add_argument("--force", action="store_true",
                       help="replace an existing, different review page and key (ratings "
                       "exported from the old page can then no longer be imported); without "
                       "it the new review is written beside the old one")
    build.set_defaults(func=_build)

    imp = commands.add_parser(
        "import", help="read raters' CSV files into human scores for the leaderboard",
        description="Map the labels of exported ratings back with the key and write per-model "
        "human scores (mean, count, per criterion). Imports accumulate: the rows of earlier "
        "imports are kept, except those of a rater and review that this import brings again, "
        "which it replaces. The reference study's CSV layout (paper, model, rater, score, "
        "source, category) is read as well.")
    imp.add_argument("files", nargs="+", metavar="RATINGS.csv")
    imp.add_argument("--key", default=None, help="key.json of the review (needed for page exports)")
    out = f"{RESULTS_DIR}/{human_ratings.DEFAULT_NAME}"
    imp.add_argument("--out", default=out, help=f"ratings file the leaderboard reads (default: {out})")
    imp.set_defaults(func=_import)
