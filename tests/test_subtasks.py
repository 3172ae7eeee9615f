"""harness.ground.subtasks against the task YAMLs lm-eval actually runs (read two ways: as plain YAML
here, and through lm-eval's own TaskManager)."""

from __future__ import annotations

import yaml

from harness.ground import subtasks


class _Loader(yaml.SafeLoader):
    """Plain YAML with lm-eval's `!function` tag read as its text."""


_Loader.add_constructor("!function", lambda loader, node: f"!function {loader.construct_scalar(node)}")


def _yaml(name: str) -> dict:
    return yaml.load((subtasks.TASK_DIR / f"{name}.yaml").read_text(), Loader=_Loader)


def _resolved(name: str) -> dict:
    """A subtask's YAML with its `include:` applied, as lm-eval applies it (the file wins)."""
    own = _yaml(name)
    base = own.pop("include", None)
    return {**(_resolved(base[: -len(".yaml")]) if base else {}), **own}


def test_spec_matches_every_yaml():
    files = sorted(p.stem for p in subtasks.TASK_DIR.glob("*.yaml"))
    groups = {f"_{g}" for g in subtasks.GROUPS}
    assert set(files) == set(subtasks.TASKS) | groups  # no subtask the spec does not know
    for name, spec in subtasks.SUBTASKS.items():
        config = _resolved(name)
        assert config["task"] == name
        assert config["output_type"] == spec.output_type
        listed = [(m["metric"], m["higher_is_better"], m["aggregation"] == "mean")
                  for m in config["metric_list"]]
        assert listed == [(m.name, m.higher_is_better, m.per_document) for m in spec.metrics]
    for group, members in subtasks.GROUPS.items():
        assert _yaml(f"_{group}")["group"] == group
        assert tuple(_yaml(f"_{group}")["task"]) == members


def test_fresh_pairs_mirror_their_standard_subtask():
    assert subtasks.FRESH_PAIRS == {subtasks.FRESH_GEN_TASK: subtasks.GEN_TASK,
                                    subtasks.FRESH_PPL_TASK: subtasks.PPL_TASK}
    for fresh, standard in subtasks.FRESH_PAIRS.items():
        assert _yaml(fresh)["include"] == f"{standard}.yaml"  # same settings and metrics
        assert "fresh." in _yaml(fresh)["custom_dataset"]
        assert subtasks.per_document_metrics(fresh) == subtasks.per_document_metrics(standard)
    assert subtasks.per_document_metrics(subtasks.PPL_TASK) == ("ppl_token", "ppl_word")
    assert subtasks.GEN_TASKS == (subtasks.GEN_TASK, subtasks.FRESH_GEN_TASK)


def test_spec_matches_lm_evals_reading_of_the_yamls():
    from lm_eval.tasks._yaml_loader import load_yaml

    for name, spec in subtasks.SUBTASKS.items():
        config = load_yaml(subtasks.TASK_DIR / f"{name}.yaml", resolve_func=False)
        assert config["task"] == name
        got = [(m["metric"], m["higher_is_better"]) for m in config["metric_list"]]
        assert got == [(m.name, m.higher_is_better) for m in spec.metrics]
        assert config["output_type"] == spec.output_type
