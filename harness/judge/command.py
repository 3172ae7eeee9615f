"""`feyntune judge`: an LLM rates completions on the review page's rubric; and
`feyntune judge agreement`: how closely those ratings follow the human ones.

    feyntune judge --runs results/runs --n 25 --judge anthropic:claude-sonnet-4-5
        -> results/judge_ratings.json, shown by `feyntune leaderboard` as the Judge column
    feyntune judge agreement ratings-*.csv [--key review/key.json]
        -> agreement figures, printed and stored for the leaderboard's notes

    rubric.py           the versioned judge instruction, request text, answer check
    items.py            which completions are rated, in which (seeded) order
    rate.py             one judge over all items through the provider layer; re-asks bad answers
    judge_ratings.py    judge_ratings.json and per-model means with bootstrap intervals
    human_agreement.py  judge vs humans, judges vs each other
"""

from __future__ import annotations

import sys
from pathlib import Path

from harness.ground.errors import FeynTuneError

DEFAULT_N = 50
TYPICAL_OUTPUT_TOKENS = 60  # the JSON answer of six scores


def _n(text: str) -> int | None:
    if text == "all":
        return None
    try:
        return int(text)
    except ValueError:
        raise FeynTuneError(f"--n {text!r}: a number of documents or 'all'") from None


def _previous(path: Path) -> dict | None:
    """The ratings file this command wrote before, if any; an error for any other file, which
    is never replaced."""
    from harness.judge import judge_ratings

    if path.exists() and not path.is_file():
        raise FeynTuneError(f"--out {path} is not a file")
    return judge_ratings.load(path)


def _estimate(items, specs, settings) -> list[str]:
    from harness.judge.rubric import CURRENT, request_text
    from providers import pricing
    from providers.budget import worst_case
    from providers.runner import estimate_tokens

    texts = [(request_text(i.prompt, i.truth, i.completion), settings) for i in items]
    inputs = sum(estimate_tokens(CURRENT.text, request_text(i.prompt, i.truth, i.completion),
                                 settings) - settings.max_tokens for i in items)
    lines = []
    for spec in specs:
        price = pricing.find_price(spec.provider, spec.model)
        typical = len(items) * TYPICAL_OUTPUT_TOKENS
        batch = spec.batch.batch and price is not None and price.has_batch
        cost = ("no price in providers/prices.yaml" if price is None else
                f"about ${price.cost(round(inputs), typical, batch):.4f}"
                f"{' at batch prices' if batch else ''}")
        worst = worst_case(spec.provider, spec.model, CURRENT.text, texts, batch)
        bound = f"at most ${worst.usd:.4f}" if worst.usd is not None else "at most: unknown"
        cap = f" (max_cost=${spec.max_cost:g})" if spec.max_cost is not None else ""
        lines.append(f"{spec.name}: {len(items)} request(s), about {round(inputs)} input "
                     f"tokens and {typical} output tokens; {cost}; {bound} before re-asks"
                     f"{cap}; cached answers cost nothing")
    return lines


def _entry_order(entry: dict) -> tuple:
    return entry["model"], entry["run"], entry["document"], entry["judge"]


def _judges(names: list[str] | None) -> list:
    """The --judge specs, each named once."""
    from harness.judge import rate

    if not names:
        raise FeynTuneError("name at least one judge: --judge PROVIDER:MODEL "
                            "(e.g. --judge anthropic:claude-sonnet-4-5)")
    specs = [rate.parse_judge(text) for text in names]
    shown = [s.name for s in specs]
    if len(set(shown)) != len(shown):
        raise FeynTuneError(f"--judge: a judge is named twice ({', '.join(shown)})")
    return specs


def _rate_all(chosen: list, specs: list, settings, args) -> tuple[list[dict], list[dict], list[dict]]:
    """Every judge over the chosen items: (scored documents, failed ones, one entry per judge),
    each judge's run reported as it finishes."""
    from harness.judge import rate
    from providers.cache import CompletionCache

    cache = CompletionCache()
    documents, failed, judges = [], [], []
    for spec in specs:
        result = rate.rate(chosen, spec, settings, args.answer_retries, cache,
                           progress=not args.quiet)
        for index, scores in result.scores.items():
            item = chosen[index]
            documents.append({"run": item.run, "model": item.model, "document": item.document,
                              "judge": spec.name, "scores": scores})
        for index, reason in result.failed.items():
            item = chosen[index]
            failed.append({"run": item.run, "model": item.model, "document": item.document,
                           "judge": spec.name, "reason": reason})
        judges.append({
            "judge": spec.name, "provider": spec.provider, "model": spec.model,
            "items": len(chosen), "scored": len(result.scores), "failed": len(result.failed),
            "answers": result.answers, "reasked": result.reasked,
            "route": "batch" if spec.batch.batch else "direct", "max_cost": spec.max_cost,
            "usage_all_answers": result.usage_all.as_dict(),
            "cost_all_answers": result.cost(result.usage_all),
        })
        _print_judge(result, chosen)
    documents.sort(key=_entry_order)
    failed.sort(key=_entry_order)
    return documents, failed, judges


def _print_judge(result, chosen: list) -> None:
    from providers.runner import format_summary

    name = result.spec.name
    print(format_summary(result.summary(), f"judge {name}"))
    print(f"  {len(chosen)} completion(s): {len(result.scores)} scored, "
          f"{len(result.failed)} without a usable answer, {result.reasked} re-asked")
    for index, reason in sorted(result.failed.items()):
        print(f"feyntune judge: {name}: {chosen[index].model} / "
              f"{chosen[index].document}: {reason}", file=sys.stderr)


def _ratings_data(args, settings, chosen: list, judges: list[dict], documents: list[dict],
                  failed: list[dict], previous: dict | None) -> dict:
    """What judge_ratings.json holds; the agreement with people is kept only while the judge's
    scores are the same ones it was computed on."""
    from harness.judge import human_agreement, judge_ratings
    from harness.judge.rubric import CURRENT

    data = {
        "rubric": CURRENT.as_dict(), "seed": args.seed, "n": args.n,
        "runs_folder": str(args.runs), "settings": settings.as_dict(),
        "answer_retries": args.answer_retries, "judges": judges,
        "models": judge_ratings.summarise(documents), "documents": documents, "failed": failed,
        "order": [[i.run, i.document] for i in chosen],
        "between_judges": human_agreement.between_judges(documents),
    }
    if previous and previous.get("agreement") and previous.get("documents") == documents:
        data["agreement"] = previous["agreement"]
    elif previous and previous.get("agreement"):
        print("feyntune judge: the judge scores changed; run `feyntune judge agreement` again",
              file=sys.stderr)
    return data


def _print_ratings(data: dict, out: Path) -> None:
    from harness.judge import human_agreement
    from harness.review.uncertainty import ci_text

    for line in human_agreement.describe_judges(data["between_judges"]):
        print(line)
    for model in data["models"]:
        print(f"  {model['model']}: judge {model['mean']:.2f} "
              f"{ci_text(model['ci_low'], model['ci_high'])} ({model['documents']} document(s))")
    print(f"judge ratings -> {out} (run `feyntune leaderboard` to show them)")


def _rate(args) -> int:
    from harness.judge import items, judge_ratings
    from providers.base import GenerationSettings

    specs = _judges(args.judge)
    out = Path(args.out)
    previous = _previous(out)
    settings = GenerationSettings(temperature=args.temperature, max_tokens=args.max_tokens)
    models, messages = items.completions(Path(args.runs), args.models)
    chosen, more = items.plan(models, _n(args.n), args.seed)
    for message in messages + more:
        print(f"feyntune judge: {message}", file=sys.stderr)
    for line in _estimate(chosen, specs, settings):
        print(f"estimate: {line}")
    if args.estimate:
        return 0
    documents, failed, judges = _rate_all(chosen, specs, settings, args)
    if not documents:
        raise FeynTuneError(f"no judge gave a usable answer ({len(failed)} failed); nothing "
                            f"written to {out}")
    data = _ratings_data(args, settings, chosen, judges, documents, failed, previous)
    judge_ratings.save(out, data)
    _print_ratings(data, out)
    return 0


def _agreement(args) -> int:
    from harness.judge import human_agreement, judge_ratings
    from harness.review import rating_import

    path = Path(args.ratings)
    data = judge_ratings.load(path)
    if data is None:
        raise FeynTuneError(f"no judge ratings at {path}: run `feyntune judge` first")
    imported, key = rating_import.read_rating_files(args.files, args.key, "judge agreement")
    if key:  # page exports number the review's documents; the judge knows them by arXiv id
        numbers = {str(d["document"]): d.get("arxiv_id") for d in key.get("documents", [])}
        for rating in imported.ratings:
            rating.document = numbers.get(str(rating.document)) or rating.document
    result = human_agreement.compare(data.get("documents", []), imported.ratings)
    data["agreement"] = result
    judge_ratings.save(path, data)
    for line in human_agreement.describe(result, [j["judge"] for j in data.get("judges", [])]):
        print(line)
    print(f"agreement stored in {path} (the leaderboard shows it in its notes)")
    return 0


def register(sub) -> None:
    parser = sub.add_parser(
        "judge", help="rate completions with an LLM judge on the human rubric; `judge agreement`: "
        "compare with human ratings",
        description="Rate completions of lm-eval runs with one or more provider models on the "
        "review page's rubric (five criteria plus overall, 1-10). Each request shows the "
        "prompt, the true continuation and one completion, never the model's name. "
        "`feyntune judge agreement` compares the ratings with human ones.")
    from harness.ground.subtasks import RESULTS_DIR, RUNS_DIR
    from harness.judge import judge_ratings, rate
    from harness.review.blind_page import DEFAULT_SEED
    from providers.registry import PROVIDER_ARGS

    out = f"{RESULTS_DIR}/{judge_ratings.DEFAULT_NAME}"
    parser.add_argument("--judge", action="append", metavar="PROVIDER:MODEL[,key=value]",
                        help="judge model, repeatable (several are averaged); options as in "
                        f"--model_args of provider models: {', '.join([*PROVIDER_ARGS, *rate.RUN_ARGS])} "
                        "(batch=true: the provider's batch API at its discount; max_cost=USD: "
                        "refuse a worst case over it, stop sending at it)")
    parser.add_argument("--runs", default=RUNS_DIR, help=f"lm-eval runs (default: {RUNS_DIR})")
    parser.add_argument("--models", nargs="+", default=None, metavar="MODEL",
                        help="leaderboard labels or run paths (default: every run with "
                        "completions)")
    parser.add_argument("--n", default=str(DEFAULT_N), metavar="N|all",
                        help=f"documents per model (default: {DEFAULT_N})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="choice and order seed "
                        f"(default: {DEFAULT_SEED})")
    parser.add_argument("--answer-retries", type=int, default=2,
                        help="re-asks after an answer that breaks the rubric (default: 2)")
    parser.add_argument("--temperature", type=float, default=0.0,
                        help="judge temperature (default: 0)")
    parser.add_argument("--max-tokens", type=int, default=rate.DEFAULT_MAX_TOKENS,
                        help="answer allowance; raise it for reasoning models "
                        f"(default: {rate.DEFAULT_MAX_TOKENS})")
    parser.add_argument("--out", default=out, help=f"ratings file (default: {out})")
    parser.add_argument("--estimate", action="store_true",
                        help="print the requests, tokens and cost, send nothing")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=_rate)
    commands = parser.add_subparsers(dest="judge_command", metavar="agreement")
    agree = commands.add_parser(
        "agreement", help="judge vs human ratings on the documents both rated",
        description="Per-model Spearman correlation of mean scores, Krippendorff's alpha "
        "between the judge and each rater, and the judge's mean offset, on the completions "
        "that both the judge and the humans rated (overall score).")
    agree.add_argument("files", nargs="+", metavar="RATINGS.csv",
                       help="raters' CSV files: the review page's export (needs --key) or the "
                       "reference study's layout (paper, model, rater, score, source, category)")
    agree.add_argument("--key", default=None, help="key.json of the review (page exports)")
    agree.add_argument("--ratings", default=out, help=f"judge ratings (default: {out})")
    agree.set_defaults(func=_agreement)
