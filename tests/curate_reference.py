"""The reference study's curation written straight with pandas, numpy and datasets.

An independent implementation for the tests and bench/curate.py to hold `feyntune data build`
against: the whole snapshot in one pandas frame, the filters on the frame, then datasets' own
train_test_split, filter, concatenate_datasets, shuffle and select on datasets of the records,
procedure by procedure as the study's notebooks did it. It must not import `finetune`.
"""

from __future__ import annotations

import pandas as pd
from datasets import Dataset, concatenate_datasets

from harness.ground.abstracts import CONTROL_IDS

SPLITS = ("train", "validation", "test")
SETS = tuple(f"s{i}" for i in range(1, 11))


def load_frame(path) -> pd.DataFrame:
    """Controls dropped, then withdrawn papers, abstracts cleaned (original kept)."""
    df = pd.read_json(path, lines=True, dtype={"id": str})
    df = df[~df["id"].isin(CONTROL_IDS)]
    withdrawn = (df["comments"].fillna("").str.lower().str.contains("withdrawn")
                 | df["abstract"].str.contains("[Ww]ithdrawn"))
    df = df[~withdrawn].copy()
    df["orig_abstract"] = df["abstract"]
    df["abstract"] = df["abstract"].str.replace(r"\n\s*", " ", regex=True).str.strip()
    return df


def split3(ds: Dataset, seed: int) -> dict[str, Dataset]:
    first = ds.train_test_split(train_size=0.7, seed=seed, shuffle=True)
    second = first["test"].train_test_split(test_size=0.5, seed=seed)
    return {"train": first["train"], "validation": second["train"], "test": second["test"]}


def base_datasets(df: pd.DataFrame, seed: int = 42, cs_limit: int = 200_000,
                  columns=("id", "categories")) -> dict[str, dict[str, Dataset]]:
    primary = df["categories"].str.split().str[0]
    frame = df[list(columns)] if columns else df

    def dataset(chosen: pd.DataFrame) -> Dataset:
        return Dataset.from_pandas(chosen, preserve_index=False)

    cs = frame[primary.str.startswith("cs.")]
    if len(cs) >= cs_limit:
        cs = cs.sample(n=cs_limit, replace=False, random_state=seed)
    chosen = {
        "hep-th": frame[primary == "hep-th"],
        "hep-ph": frame[primary == "hep-ph"],
        "gr-qc": frame[primary == "gr-qc"],
        "q-bio": frame[primary.str.startswith("q-bio")],
        "cs": cs,
        "s2": frame[(primary == "hep-ph") | (primary == "gr-qc")],  # ONE selection
    }
    return {name: split3(dataset(part), seed) for name, part in chosen.items()}


def head(ds: Dataset, n: int) -> Dataset:
    return ds.select(range(max(0, min(n, len(ds)))))


def mixes(base: dict[str, dict[str, Dataset]], seed: int = 42) -> dict[str, dict[str, Dataset]]:
    """The ten sets, split by split."""
    def total(name):
        return sum(len(base[name][s]) for s in SPLITS)

    prop = total("hep-th") / (total("gr-qc") + total("hep-ph"))
    out: dict[str, dict[str, Dataset]] = {name: {} for name in SETS}
    for s in SPLITS:
        th, ph, gr = base["hep-th"][s], base["hep-ph"][s], base["gr-qc"][s]
        qb, cs, s2 = base["q-bio"][s], base["cs"][s], base["s2"][s]

        def mix(*parts):
            return concatenate_datasets(list(parts)).shuffle(seed=seed).flatten_indices()

        n = len(th)
        k15 = int(0.15 * n)
        s2_ph = s2.filter(lambda c: c.startswith("hep-ph"), input_columns="categories")
        s2_gr = s2.filter(lambda c: c.startswith("gr-qc"), input_columns="categories")
        gr_part = head(gr.shuffle(seed=seed), int(prop * len(gr)))
        ph_part = head(ph.shuffle(seed=seed), len(th) - len(gr_part))
        cs_needed = len(gr) + len(ph) - len(qb)
        built = {
            "s1": th,
            "s2": s2,
            "s3": mix(th, s2),
            "s4": mix(head(th, n - 2 * k15), head(s2_gr, k15), head(s2_ph, k15)),
            "s5": mix(head(th, n - k15), head(s2_gr, k15)),
            "s6": mix(head(th, n - k15), head(s2_ph, k15)),
            "s7": mix(th, gr),
            "s8": mix(th, ph),
            "s9": mix(gr_part, ph_part),
            "s10": mix(th, qb, head(cs.shuffle(seed=seed), cs_needed)),
        }
        for name, ds in built.items():
            out[name][s] = ds
    return out


def mix_ids(path, seed: int = 42, cs_limit: int = 200_000) -> dict[str, dict[str, list[str]]]:
    built = mixes(base_datasets(load_frame(path), seed, cs_limit), seed)
    return {name: {s: list(built[name][s]["id"]) for s in SPLITS} for name in SETS}
