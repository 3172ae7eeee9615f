"""How the tests run vLLM's CPU engines: uncompiled, not a pipeline step.

- VLLM_CPU_CI_ENV: no inductor compilation and no warm-up (dynamo with its eager backend), what
  vLLM's own CPU CI sets "to save time": about a minute less per engine on two cores. Set for
  the whole session by tests/conftest.py.
- TORCHDYNAMO_DISABLE (torch's own switch): not even the one dynamo trace each engine still
  makes, about 14 s less per engine. Set only where engines start (conftest `eager_vllm`,
  tests/test_vllm_backend.py), so nothing else in the suite loses torch.compile.

The model then runs as plain PyTorch modules with vLLM's CPU attention and ops, and that is what
tests/test_vllm_backend.py holds to transformers' figures. What inductor would compile from it is
vLLM's and torch's code, not this project's, and a GPU compiles differently anyway.
"""

EAGER_VLLM = {"VLLM_CPU_CI_ENV": "1", "TORCHDYNAMO_DISABLE": "1"}
