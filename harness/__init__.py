"""FeynTune harness: the `feyntune` commands and the libraries they share, by pipeline stage.

Commands (each adds a subcommand with `register(sub)`; harness/cli.py lists them in order):
    assets.py         assets fetch|path|list     the offline models
    evaluate.py       eval                       lm-eval with the hepth_completion task
    reproduce.py      reproduce                  the study's published models, published settings
    leaderboard/      leaderboard                tables, figures and page from every run
    review/           review build|import        blind human rating of completions
    judge/            judge [agreement]          an LLM judge on the human rubric
    demo.py           demo                       the whole study, small and offline
(curation and training commands live in finetune/: data build, train, merge)

Libraries, in the order the pipeline uses them:
    curate    abstracts.py      the reference study's cleaning and prompt split
              freshness.py      when a record first appeared; fresh against a cut date
              jsonl.py          reading the project's JSON-lines files
    evaluate  subtasks.py       the hepth_completion subtasks: names, metrics, fresh twins
              documents.py      the task's documents and where they come from
              fresh_documents.py  the documents of hepth_completion_fresh
              metrics.py        SemScore, perplexity, entropy, leak and repetition rules
              contamination.py  model training cut-offs (cutoffs.yaml) against the documents
              backends.py       lm-eval's hf and vllm models: availability, arguments, throughput
              preflight.py      a base model and its adapters checked before any work
    read      lmeval_outputs.py  the one reader of lm-eval's results_*.json / samples_*.jsonl
              stats.py          the one bootstrap engine: a mean, a fresh-minus-standard gap,
                                a paired change; Krippendorff's alpha
              study.py          the reference study's registry (study.yaml): models, figures
"""

__version__ = "0.1.0"
