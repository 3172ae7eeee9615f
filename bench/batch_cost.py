"""Worst-case cost of the study's test split through each provider, direct and batch, as
`max_cost` computes it before a run (providers.budget), from the real prompt lengths of the
sample's hep-th abstracts scaled to the split's size.

    .venv/bin/python bench/batch_cost.py [--sample ../shared/data/arxiv/arxiv-sample.jsonl]
        [--documents 15808] [--max-tokens 1024]

Each prompt is the task's: the cleaned abstract's first half of sentences
(harness.ground.abstracts), sent with the versioned instruction as system message. Its input
tokens are bounded by its UTF-8 bytes plus the chat overhead, the output by the token limit,
at the rates of providers/prices.yaml. Sends nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.ground.abstracts import clean_abstract, primary_category, split_prompt
from providers import pricing
from providers.base import GenerationSettings
from providers.budget import input_token_bound, worst_case
from providers.instruction import CURRENT

MODELS = (("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("anthropic", "claude-sonnet-4-5"),
          ("gemini", "gemini-2.5-pro"), ("gemini", "gemini-2.5-flash"),
          ("deepseek", "deepseek-chat"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", default=str(ROOT / "../shared/data/arxiv/arxiv-sample.jsonl"))
    parser.add_argument("--documents", type=int, default=15808)
    parser.add_argument("--max-tokens", type=int, default=1024)
    args = parser.parse_args()
    prompts = []
    for line in Path(args.sample).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if primary_category(record["categories"]) == "hep-th":
            prompts.append(split_prompt(clean_abstract(record["abstract"]))[0])
    bounds = [input_token_bound(CURRENT.text, p) for p in prompts]
    mean_bound = sum(bounds) / len(bounds)
    print(f"{len(prompts)} hep-th abstracts: mean prompt {sum(map(len, prompts)) / len(prompts):.0f}"
          f" characters; input bound {mean_bound:.0f} tokens a request (instruction included)")
    settings = GenerationSettings(max_tokens=args.max_tokens)
    # The split's prompts, as the sample's repeated to its size (the mean is what matters).
    scaled = [(prompts[i % len(prompts)], settings) for i in range(args.documents)]
    print(f"worst case of {args.documents} requests at {args.max_tokens} output tokens "
          f"(prices of {pricing.load_table()['as_of']}):")
    print("| provider | model | direct | batch |")
    print("|---|---|---|---|")
    for provider, model in MODELS:
        direct = worst_case(provider, model, CURRENT.text, scaled, batch=False)
        price = pricing.find_price(provider, model)
        batch = (f"${worst_case(provider, model, CURRENT.text, scaled, batch=True).usd:,.0f}"
                 if price is not None and price.has_batch else "no batch API")
        print(f"| {provider} | {model} | ${direct.usd:,.0f} | {batch} |")


if __name__ == "__main__":
    main()
