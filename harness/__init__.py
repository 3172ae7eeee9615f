"""FeynTune harness: the `feyntune` command and its rooms, one per pipeline stage.

At the top: cli.py (the `feyntune` command; it lists the command modules in pipeline order),
demo.py (`feyntune demo`) and assets.py with assets.yaml (`feyntune assets`, the offline models).
Curation and training (data build, train, merge) live in finetune/; commercial LLMs in providers/.

Rooms, lowest first: each imports only from the rooms listed before it (finetune/ and providers/
only from ground/), never in a cycle; tests/test_import_graph.py checks it from the source.
    ground/       what every package may import: errors, home, jsonl, digest, version, names,
                  stats (the one bootstrap engine and Krippendorff's alpha), abstracts (the
                  reference study's cleaning and prompt split), freshness (when a record first
                  appeared), subtasks (the hepth_completion subtasks: names, metrics, fresh twins)
    study/        registry.py + study.yaml (the reference study's models and figures),
                  marker.py (what a reproduced run stands for), reproduce.py (`feyntune reproduce`),
                  claims.py (one run per model folder at a time), fanout.py (submitit jobs)
    runs/         lmeval_outputs.py (the one reader of lm-eval's results_*.json / samples_*.jsonl),
                  identity.py (which model a run evaluated), labels.py (what each run is called)
    evaluate/     command.py (`feyntune eval`), documents.py, fresh_documents.py, metrics.py,
                  contamination.py + cutoffs.yaml (model training cut-offs against the documents),
                  backends.py (lm-eval's hf and vllm models, one class each: all that differs),
                  preflight.py (a base model and its adapters checked before any work)
    review/       command.py (`feyntune review build|import`), blind_page.py, criteria.py,
                  rating_import.py, human_ratings.py (results/human_ratings.json), uncertainty.py
    judge/        command.py (`feyntune judge [agreement]`), items.py, rubric.py, rate.py,
                  judge_ratings.py (results/judge_ratings.json), human_agreement.py
    leaderboard/  command.py (`feyntune leaderboard`), rows.py, compare.py, render.py, page.py,
                  figures.py
The command modules sit above every room (reproduce.py among them), the demo and the CLI above all.
"""
