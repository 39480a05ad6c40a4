#!/usr/bin/env bash
# Run by Snakemake inside the new conda environment of workflow/envs/mimic.yaml.
# Installs what `make run` installs: torch (kept if the environment has one; else requirements/torch.txt
# with its own dependencies, a CUDA build on a GPU node), then requirements/run.lock exactly
# (hash-checked, nothing resolved) and this checkout without its dependencies.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python -c "import torch" 2>/dev/null || python -m pip install --quiet "$(cat "$root/requirements/torch.txt")"
python -m pip install --quiet --require-hashes --no-deps -r "$root/requirements/run.lock"
python -m pip install --quiet --no-deps --no-build-isolation --editable "$root"
python -m pip check
