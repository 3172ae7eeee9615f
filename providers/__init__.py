"""Commercial LLM providers (OpenAI, Anthropic, Gemini, DeepSeek, any OpenAI-compatible server)
behind one interface, for the hep-th completion benchmark. See providers/README.md.

    base.py            Provider, GenerationSettings, Completion, the three error kinds
    registry.py        providers by name; the @register_provider decorator every provider uses
    <name>.py          one file per provider, decorated (openai_provider, anthropic_provider, ...)
    runner.py          cache first, then threads with rate limits and bounded retries
    batch.py           the batch route (batch=true): split, submit, resume, poll, collect, resend
    batch_api.py       what a provider's batch API offers the batch route (one part per provider)
    budget.py          max_cost: the worst case before sending, the cap while sending
    limits.py          requests/tokens-per-minute buckets
    cache.py           the persistent answer cache under $FEYNTUNE_HOME
    instruction.py     the versioned instruction; stripping an echoed prompt
    pricing.py         cost from prices.yaml (standard and dated batch rates)
    lm_eval_model.py   `--model provider` for lm-eval

Nothing here imports an SDK until its provider is asked for.
"""
