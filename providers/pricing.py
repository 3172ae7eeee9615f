"""Cost from the editable price table `prices.yaml`: standard rates per model, and the dated
share of them that each provider's batch API charges."""

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
    batch_input_per_mtok: float | None = None  # None: no batch price for this provider
    batch_output_per_mtok: float | None = None

    @property
    def has_batch(self) -> bool:
        return self.batch_input_per_mtok is not None and self.batch_output_per_mtok is not None

    def cost(self, input_tokens: float, output_tokens: float, batch: bool = False) -> float:
        if batch and not self.has_batch:
            raise FeynTuneError(f"no batch price for {self.entry} in {PRICES}")
        rates = ((self.batch_input_per_mtok, self.batch_output_per_mtok) if batch
                 else (self.input_per_mtok, self.output_per_mtok))
        return (input_tokens * rates[0] + output_tokens * rates[1]) / 1e6


@lru_cache(maxsize=4)
def load_table(path: Path = PRICES) -> dict[str, Any]:
    try:
        table = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise FeynTuneError(f"cannot read the price table {path}: {err}") from None
    if not isinstance(table.get("providers", {}), dict):
        raise FeynTuneError(f"{path}: 'providers' must map provider -> model -> prices")
    if not isinstance(table.get("batch", {}) or {}, dict):
        raise FeynTuneError(f"{path}: 'batch' must hold as_of and share: provider -> fraction")
    return table


def batch_share(provider: str, path: Path = PRICES) -> float | None:
    """The fraction of the standard rates a provider's batch API charges, or None."""
    share = ((load_table(path).get("batch") or {}).get("share") or {}).get(provider)
    if share is None:
        return None
    try:
        value = float(share)
    except (TypeError, ValueError):
        value = -1.0
    if not 0.0 < value <= 1.0:
        raise FeynTuneError(f"{path}: batch share of {provider} must be in (0, 1], got {share!r}")
    return value


def find_price(provider: str, model: str, path: Path = PRICES) -> Price | None:
    rows = (load_table(path).get("providers") or {}).get(provider) or {}
    name = model.split("/")[-1]  # "models/gemini-2.5-pro" and the like
    matches = [k for k in rows if name == k or name.startswith(k)]
    if not matches:
        return None
    entry = max(matches, key=len)
    row = rows[entry]
    try:
        standard = float(row["input"]), float(row["output"])
        share = batch_share(provider, path)
        batch: tuple[float | None, float | None] = (None, None)
        if share is not None or ("batch_input" in row and "batch_output" in row):
            batch = (float(row.get("batch_input", standard[0] * (share or 0.0))),
                     float(row.get("batch_output", standard[1] * (share or 0.0))))
    except (KeyError, TypeError, ValueError):
        raise FeynTuneError(
            f"{path}: {provider}/{entry} needs numeric 'input' and 'output' prices"
        ) from None
    return Price(entry, *standard, *batch)


def estimate(provider: str, model: str, input_tokens: int, output_tokens: int,
             batch_input_tokens: int = 0, batch_output_tokens: int = 0) -> dict[str, Any]:
    """Cost of answers, the batch ones (a part of the totals) at the batch rates."""
    price = find_price(provider, model)
    table = load_table(PRICES)
    if price is None:
        return {"usd": None, "note": f"no price for {provider}/{model} in {PRICES}"}
    if (batch_input_tokens or batch_output_tokens) and not price.has_batch:
        return {"usd": None, "note": f"no batch price for {provider} in {PRICES}"}
    direct = price.cost(input_tokens - batch_input_tokens, output_tokens - batch_output_tokens)
    batched = (price.cost(batch_input_tokens, batch_output_tokens, batch=True)
               if batch_input_tokens or batch_output_tokens else 0.0)
    out = {
        "usd": round(direct + batched, 6),
        "price_entry": price.entry,
        "usd_per_mtok": {"input": price.input_per_mtok, "output": price.output_per_mtok},
        "prices_as_of": table.get("as_of"),
    }
    if batch_input_tokens or batch_output_tokens:
        out["usd_batch"] = round(batched, 6)
        out["batch_usd_per_mtok"] = {"input": price.batch_input_per_mtok,
                                     "output": price.batch_output_per_mtok}
        out["batch_prices_as_of"] = (table.get("batch") or {}).get("as_of")
    return out
