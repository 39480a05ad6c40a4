#!/usr/bin/env bash
# Run by Snakemake inside the new conda environment of workflow/envs/mimic.yaml.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python -m pip install --quiet --editable "$root"
