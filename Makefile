# Two commands on a fresh machine: `make run` (the main job) and `make test` (the tests).
# Both create .venv if it is missing and are idempotent. GPU users: create .venv and
# install your CUDA build of torch into it first; the setup below keeps an installed torch.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch by default (pip takes `torch==2.13.0` from a local wheel where one lies on disk).
# torch is not in the locks: a torch already in the venv (a GPU user's CUDA build) is kept.
TORCH_SPEC ?= $(shell cat requirements/torch.txt)
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
# Exactly the lock, nothing resolved: every line pinned with its hashes, no dependency looked up, then the
# project itself without its dependencies, built by the locked setuptools (no isolated build env to resolve).
LOCKED_INSTALL = $(PIP) install --quiet --require-hashes --no-deps -r $(1) \
	&& $(PIP) install --quiet --no-deps --no-build-isolation -e . \
	&& $(PIP) check

.PHONY: run test test-latest lint lock mutation setup setup-test clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch without its dependencies: the locks pin them (sympy, networkx, jinja2, fsspec, filelock, ...).
$(VENV)/.torch: | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(PIP) install --quiet --no-deps "$(TORCH_SPEC)"
	touch $@

$(VENV)/.run: requirements/run.lock pyproject.toml $(VENV)/.torch
	$(call LOCKED_INSTALL,requirements/run.lock)
	rm -f $(VENV)/.test
	touch $@

$(VENV)/.test: requirements/test.lock pyproject.toml $(VENV)/.torch
	$(call LOCKED_INSTALL,requirements/test.lock)
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

# Regenerate the locks after editing the dependency ranges in pyproject.toml or requirements/torch.txt:
# `make lock` keeps every pin the new ranges still allow; `make lock UPGRADE=1` takes the newest releases
# (run `make test-latest` first to see what they break). pip-tools runs from its own pinned venv.
PIP_TOOLS_SPEC ?= pip-tools==7.7.0
LOCK_VENV ?= .venv-lock
LOCK_FLAGS = --quiet --generate-hashes --strip-extras --no-emit-index-url --no-emit-find-links \
	--constraint requirements/torch.txt --unsafe-package torch --build-deps-for editable
lock:
	test -x $(LOCK_VENV)/bin/pip-compile || { $(PYTHON) -m venv $(LOCK_VENV) && \
		$(LOCK_VENV)/bin/python -m pip install --quiet "$(PIP_TOOLS_SPEC)"; }
	$(LOCK_VENV)/bin/pip-compile $(LOCK_FLAGS) $(if $(UPGRADE),--upgrade) --extra pipeline --extra test --extra slurm \
		--output-file requirements/test.lock pyproject.toml
	# run.lock starts from test.lock's pins, so both locks agree on every package they share
	cp requirements/test.lock requirements/run.lock
	$(LOCK_VENV)/bin/pip-compile $(LOCK_FLAGS) --extra pipeline --output-file requirements/run.lock pyproject.toml

# Known drift: the newest releases the ranges in pyproject.toml allow, in their own venv, against the fast
# tests. Prints the packages whose newest release differs from the lock, then what fails. Not part of CI.
LATEST_VENV ?= .venv-latest
LOCK_TESTS = tests/test_lock.py::test_every_locked_version_is_the_installed_one \
	tests/test_lock.py::test_the_environment_runs_the_locked_transformers
test-latest:
	rm -rf $(LATEST_VENV)
	$(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python -m pip install --quiet --constraint requirements/torch.txt "$(TORCH_SPEC)" \
		-e ".[pipeline,test,slurm]"
	$(LATEST_VENV)/bin/python tools/lock_drift.py requirements/test.lock
	PATH="$(abspath $(LATEST_VENV)/bin):$$PATH" $(LATEST_VENV)/bin/python -m pytest -m "not slow" -q \
		-p no:cacheprovider $(foreach t,$(LOCK_TESTS),--deselect $(t)) \
		|| { echo "test-latest: the failures above are what the next lock update breaks"; exit 1; }
	@echo "test-latest: the fast tests pass with the newest releases"

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
	rm -rf $(VENV) $(LATEST_VENV) $(LOCK_VENV)
