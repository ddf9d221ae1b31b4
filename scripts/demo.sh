#!/usr/bin/env bash
# The main job on the embedded defaults: install, then a small HotpotQA run end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/evalq demo "$@"
