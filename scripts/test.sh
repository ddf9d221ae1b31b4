#!/usr/bin/env bash
# The whole test suite from a fresh clone: services, install, lint, types, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
bash scripts/install.sh
export EVALQ_TEST_POSTGRES_URL=${EVALQ_TEST_POSTGRES_URL-postgresql://postgres@127.0.0.1:5432/test}
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/pytest -q "$@"
