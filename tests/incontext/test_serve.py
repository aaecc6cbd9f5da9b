"""The server's prefix sharing: which texts of a request read a prefix once (the model's exactness is in
``test_http_model.py``)."""

from __future__ import annotations

from metaopt.incontext.serve import _common_prefix, _shared_prefix_groups


def test_a_prompt_with_each_label_is_one_group_and_prompts_that_only_begin_alike_are_not():
    a = list(range(100, 140))  # a prompt of 40 tokens
    b = a[:10] + list(range(500, 530))  # another that shares its first 10 (an instruction, say)
    rows = [a + [1], a + [2, 3], a + [4], b + [1], b + [2, 3], [7, 8]]
    assert _shared_prefix_groups(rows) == [[0, 1, 2], [3, 4], [5]]
    assert _common_prefix(rows[:3]) == 40 and _common_prefix(rows[:4]) == 10


def test_queries_after_one_context_share_it():
    context = list(range(300, 380))  # 80 tokens of examples, then each query (15 tokens) with each label
    rows = [context + list(range(q * 20, q * 20 + 15)) + [label] for q in range(3) for label in (1, 2)]
    assert _shared_prefix_groups(rows) == [[0, 1, 2, 3, 4, 5]]
