"""lm-eval hooks of the hepth_completion tasks; the work is done in harness/."""

from lm_eval.api.filter import Filter
from lm_eval.api.task import ConfigurableTask

from harness.evaluate import documents, metrics


def load_generation_docs(**metadata):
    return documents.generation_dataset(metadata)


def load_perplexity_docs(**metadata):
    return documents.perplexity_dataset(metadata)


def process_generation(doc, results):
    (completion,) = results
    return metrics.generation_metrics(doc, completion, doc.get("semscore_model"))


def process_perplexity(doc, results):
    ((loglikelihood, _is_greedy),) = results
    return metrics.perplexity_metrics(doc, loglikelihood, doc["ppl_tokens"])


class PrecomputeSemScores(Filter):
    """Embeds all completions and references in one batched pass before process_results runs
    per document; responses pass through unchanged."""

    def apply(self, resps, docs):
        resps = list(resps)
        metrics.warm_semscores(docs, [r if isinstance(r, str) else r[0] for r in resps])
        return resps


class GenerationTask(ConfigurableTask):
    """hepth_completion_gen's requests, each with its document's own sampling seed when the
    generation arguments carry a run seed (`seed=`, which `feyntune reproduce` passes to vLLM:
    lm-eval's vllm model seeds each request with it, so one value for all would give every
    document the same random stream). Without a seed (hf: lm-eval seeds torch once per run) the
    requests are lm-eval's own."""

    def __init__(self, config: dict | None = None, **kwargs):
        # lm-eval builds a `class:` task with the whole YAML, `class` key included, which its
        # TaskConfig does not take
        super().__init__(config={k: v for k, v in (config or {}).items() if k != "class"},
                         **kwargs)

    def construct_requests(self, doc, ctx, **kwargs):
        requests = super().construct_requests(doc, ctx, **kwargs)
        for request in requests if isinstance(requests, list) else [requests]:
            gen_kwargs = request.arguments[1]
            if isinstance(gen_kwargs, dict) and gen_kwargs.get("seed") is not None:
                gen_kwargs["seed"] = documents.document_seed(gen_kwargs["seed"], doc["id"])
        return requests
