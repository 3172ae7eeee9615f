"""FeynTune harness: the `feyntune` command and its rooms, one per pipeline stage.

At the top: cli.py (the `feyntune` command; it lists the command modules in pipeline order),
demo.py (`feyntune demo`) and assets.py with assets.yaml (`feyntune assets`, the offline models).
Curation and training (data build, train, merge) live in finetune/; commercial LLMs in providers/.

Rooms, lowest first: each imports only from the rooms listed before it (finetune/ and providers/
only from ground/), never in a cycle; tests/test_import_graph.py checks it from the source.
    ground/       what every package may import: errors, home, jsonl, digest, version, names,
                  stats (the one bootstrap engine and Krippendorff's alpha), abstracts (the
                  reference study's cleaning and prompt split), freshness (when a record first
                  appeared), subtasks (the hepth_completion subtasks: names, metrics, fresh twins),
                  reference (where the reference study's file is; its documents, the task's default)
    runs/         lmeval_outputs.py (the one reader of lm-eval's results_*.json / samples_*.jsonl),
                  identity.py (which model a run evaluated), labels.py (what each run is called),
                  marker.py (what a study run's results stand for, kept in lm-eval's metadata)
    evaluate/     command.py (`feyntune eval`), documents.py, fresh_documents.py, metrics.py,
                  contamination.py + cutoffs.yaml (model training cut-offs against the documents),
                  backends.py (lm-eval's hf and vllm models, one class each: all that differs),
                  preflight.py (a base model and its adapters checked before any work)
    study/        spec.py (a study file, e.g. studies/reference.yaml, read and checked),
                  registry.py (a study's models and published figures), jobs.py (a study's work
                  as jobs, the Executor interface, the sequential executor), claims.py (one run per
                  folder at a time), executors.py (the local and slurm executors, through
                  submitit), train_job.py (training one adapter as a requeueable job), fanout.py
                  (the job options, reproduce's jobs); its commands: reproduce.py (`feyntune reproduce`),
                  runner.py (a study's jobs and each model's state) and command.py
                  (`feyntune study run|plan|status`)
    review/       command.py (`feyntune review build|import`), blind_page.py, criteria.py,
                  rating_import.py, human_ratings.py (results/human_ratings.json), uncertainty.py
    judge/        command.py (`feyntune judge [agreement]`), items.py, rubric.py, rate.py,
                  judge_ratings.py (results/judge_ratings.json), human_agreement.py
    leaderboard/  command.py (`feyntune leaderboard`), rows.py, compare.py, render.py, page.py,
                  figures.py
The command modules sit above every room (reproduce.py and the study runner among them), the demo and the CLI above all.
"""
