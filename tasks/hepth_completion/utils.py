"""lm-eval hooks of the hepth_completion tasks; the work is done in harness/."""

from lm_eval.api.filter import Filter

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
