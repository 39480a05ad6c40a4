# Two commands on a fresh machine: `make run` (the main job) and `make test` (the tests).
# Both create .venv if it is missing and are idempotent. GPU users: create .venv and
# install your CUDA build of torch into it first; the setup below keeps an installed torch.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip

.PHONY: run test lint mutation setup setup-test clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.torch: | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(PIP) install --quiet "$(TORCH_SPEC)"
	touch $@

$(VENV)/.run: pyproject.toml $(VENV)/.torch
	$(PIP) install --quiet -e ".[pipeline]"
	touch $@

$(VENV)/.test: pyproject.toml $(VENV)/.torch
	$(PIP) install --quiet -e ".[pipeline,test,slurm]"
	touch $@ $(VENV)/.run

setup: $(VENV)/.run
setup-test: $(VENV)/.test

# The main job: the whole pipeline on the default params.yaml (the `mimic` commands come from .venv).
run: $(VENV)/.run
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --cores 4 all

test: $(VENV)/.test
	$(BIN)/ruff check .
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest

lint: $(VENV)/.test
	$(BIN)/ruff check .

# Mutation testing of the core modules (settings: [tool.mutmut] in pyproject.toml); hours on 2 cores.
# make mutation: every mutant of the core modules (hours on 2 cores); make mutation MUTATION_SAMPLE=400:
# a stratified random sample of 400 (tools/mutation_sample.py, seed MUTATION_SEED), scored with 95% intervals.
MUTATION_SAMPLE ?=
MUTATION_SEED ?= 8
mutation: $(VENV)/.test
	$(PIP) install --quiet "mutmut==3.8.1"
	rm -rf mutants
	PATH="$(abspath $(BIN)):$$PATH" OMP_NUM_THREADS=1 $(BIN)/mutmut run \
		$(if $(MUTATION_SAMPLE),$$($(BIN)/python tools/mutation_sample.py --size $(MUTATION_SAMPLE) --seed $(MUTATION_SEED))) || true
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python tools/mutation_score.py

clean-venv:
	rm -rf $(VENV)
