"""Cost estimate from the editable price table `prices.yaml`."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from harness.ground.errors import FeynTuneError

PRICES = Path(__file__).with_name("prices.yaml")


@dataclass(frozen=True)
class Price:
    entry: str  # the table row that matched
    input_per_mtok: float
    output_per_mtok: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6


@lru_cache(maxsize=4)
def load_table(path: Path = PRICES) -> dict[str, Any]:
    try:
        table = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise FeynTuneError(f"cannot read the price table {path}: {err}") from None
    if not isinstance(table.get("providers", {}), dict):
        raise FeynTuneError(f"{path}: 'providers' must map provider -> model -> prices")
    return table


def find_price(provider: str, model: str, path: Path = PRICES) -> Price | None:
    rows = (load_table(path).get("providers") or {}).get(provider) or {}
    name = model.split("/")[-1]  # "models/gemini-2.5-pro" and the like
    matches = [k for k in rows if name == k or name.startswith(k)]
    if not matches:
        return None
    entry = max(matches, key=len)
    row = rows[entry]
    try:
        return Price(entry, float(row["input"]), float(row["output"]))
    except (KeyError, TypeError, ValueError):
        raise FeynTuneError(
            f"{path}: {provider}/{entry} needs numeric 'input' and 'output' prices"
        ) from None


def estimate(provider: str, model: str, input_tokens: int, output_tokens: int) -> dict[str, Any]:
    price = find_price(provider, model)
    table = load_table(PRICES)
    if price is None:
        return {"usd": None, "note": f"no price for {provider}/{model} in {PRICES}"}
    return {
        "usd": round(price.cost(input_tokens, output_tokens), 6),
        "price_entry": price.entry,
        "usd_per_mtok": {"input": price.input_per_mtok, "output": price.output_per_mtok},
        "prices_as_of": table.get("as_of"),
    }
