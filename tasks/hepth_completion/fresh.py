"""lm-eval hooks of the hepth_completion_fresh tasks: the hepth_completion documents restricted
to abstracts first versioned after a cut date (harness/evaluate/fresh_documents.py does the work)."""

from harness.evaluate import documents, fresh_documents


def load_generation_docs(**metadata):
    return fresh_documents.fresh_dataset(metadata, documents.generation_dataset)


def load_perplexity_docs(**metadata):
    return fresh_documents.fresh_dataset(metadata, documents.perplexity_dataset)
