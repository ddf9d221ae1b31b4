"""extract_short_answer on what instruction-tuned models really write."""

import pytest

from evalq.rag.scoring import extract_short_answer


@pytest.mark.parametrize(
    ("generated", "expected"),
    [
        # labels
        ("Answer: Paris\nBecause it is the capital.", "Paris"),
        ("The answer is: Krzysztof Zanussi.", "Krzysztof Zanussi"),
        ("The answer is Krzysztof Zanussi.", "Krzysztof Zanussi"),
        ("Based on the passages, the answer is Krzysztof Zanussi.", "Krzysztof Zanussi"),
        ("The answer to the question is Paris.", "Paris"),
        ("**Answer:** Krzysztof Zanussi", "Krzysztof Zanussi"),
        ("__Answer:__ Paris", "Paris"),
        ("Answer - Krzysztof Zanussi", "Krzysztof Zanussi"),
        ("Answer \u2013 Krzysztof Zanussi", "Krzysztof Zanussi"),
        ("Answer\u2014Paris", "Paris"),
        ("Final answer: Chief of Protocol", "Chief of Protocol"),
        ("Short answer: Chief of Protocol", "Chief of Protocol"),
        ("A: Paris", "Paris"),
        ("answer: paris", "paris"),
        ("Answer: The answer is Paris.", "Paris"),
        ("Answer:\n\nyes", "yes"),
        ("### Answer\nParis", "Paris"),
        ("Sure! Here is the answer: Paris", "Paris"),
        # think blocks
        ("<think>Polanski? No.</think>\nKrzysztof Zanussi", "Krzysztof Zanussi"),
        ("<think>a\nb</think>Answer: Paris", "Paris"),
        ("<THINK>x</THINK> Paris", "Paris"),
        ("<think>still thinking about Paris", ""),
        ("Paris?</think>\nLyon", "Lyon"),  # the template opened the block
        # a new turn ends the reply
        ("Krzysztof Zanussi\n\nQuestion: Who else?\nAnswer: Roman Polanski", "Krzysztof Zanussi"),
        ("Paris\nQ: And Spain?\nA: Madrid", "Paris"),
        ("Paris\nPassages:\n[1] x", "Paris"),
        ("Paris\nContext: x", "Paris"),
        ("Paris\nNotes so far:\n- x", "Paris"),
        ("Paris\nUser: thanks", "Paris"),
        ("Paris\nHuman: thanks", "Paris"),
        ("Question: What is the capital?\nAnswer: Paris", "Paris"),  # an echo first
        # a bare first line beats a later (invented) "Answer:" line
        ("Krzysztof Zanussi\nAnswer: Roman Polanski", "Krzysztof Zanussi"),
        ("  Paris  \nmore", "Paris"),
        # ... but a later "Final answer:" concludes reasoning
        ("Let me think.\nFinal answer: Chief of Protocol", "Chief of Protocol"),
        ("The director was Polish.\nFinal answer: Zanussi", "Zanussi"),
        # preamble lines are skipped
        ("Sure! Here is the answer:\nKrzysztof Zanussi", "Krzysztof Zanussi"),
        ("Based on the passages:\n\nKrzysztof Zanussi", "Krzysztof Zanussi"),
        ("Okay.\nParis", "Paris"),
        ("Based on the passages:", ""),
        # cleaning
        ('"Paris".', "Paris"),
        ("\u201cParis\u201d", "Paris"),
        ("'Paris'", "Paris"),
        ("`Paris`", "Paris"),
        ("*Paris*", "Paris"),
        ("- Paris", "Paris"),
        ("Answer: St. Louis.", "St. Louis"),
        ("snake_case_name", "snake_case_name"),
        ("Yes, both are American.", "Yes, both are American"),
        # nothing to read
        ("", ""),
        ("  \n\n ", ""),
        ("Answer:", ""),
        ("**", ""),
    ],
)
def test_extract_short_answer(generated: str, expected: str) -> None:
    assert extract_short_answer(generated) == expected
