"""The length system prompt and user prompts of ThinkPrune's official code."""

from __future__ import annotations

import re

import pytest
from conftest import REPO

from verl_thinkprune.prompts import length_system_prompt, state_limit, thinkprune_messages, user_prompt

METHOD_NOTE = REPO.parent / "shared" / "notes" / "thinkprune-method.md"


@pytest.mark.skipif(not METHOD_NOTE.exists(), reason="the method note lives in ../shared, beside the checkout")
def test_system_prompt_is_the_official_text_word_for_word():
    note = " ".join(METHOD_NOTE.read_text().split())
    official = re.search(r'System prompt \(exact\): "(.+?)"', note).group(1)
    assert length_system_prompt(4000) == official.replace("{max_length}", "4000")


@pytest.mark.parametrize(
    ("family", "suffix"),
    [
        ("deepseek", " Let's think step by step and output the final answer within \\boxed{}."),
        ("qwq", " Please reason step by step, and put your final answer within \\boxed{}."),
    ],
)
def test_messages_carry_the_limit_and_the_family_suffix(family, suffix):
    messages = thinkprune_messages("  What is 1+1?\n", 3000, family)
    assert messages == [
        {"role": "system", "content": length_system_prompt(3000)},
        {"role": "user", "content": "What is 1+1?" + suffix},
    ]
    assert messages[0]["content"].endswith("The output of the assistant should be within 3000 tokens.")


@pytest.mark.parametrize("bad", [0, -5, 2.5, True, "3000"])
def test_limit_must_be_a_positive_int(bad):
    with pytest.raises(ValueError, match="positive int"):
        length_system_prompt(bad)


def test_unknown_model_family_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"unknown model family 'llama'.*deepseek"):
        user_prompt("x", "llama")


def test_stating_a_limit_restates_another_rounds_prompt_and_adds_a_missing_one():
    user = {"role": "user", "content": user_prompt("What is 1+1?")}
    prepared_for_4000 = thinkprune_messages("What is 1+1?", 4000)

    assert state_limit(prepared_for_4000, 3000) == (thinkprune_messages("What is 1+1?", 3000), "restated")
    assert state_limit([user], 3000) == ([{"role": "system", "content": length_system_prompt(3000)}, user], "added")
    assert state_limit(prepared_for_4000, 4000) == (prepared_for_4000, "unchanged")
    assert thinkprune_messages("What is 1+1?", None) == [user]


def test_a_system_prompt_of_the_users_own_is_left_alone():
    messages = [
        {"role": "system", "content": "You are terse. Answer within 100 tokens."},
        {"role": "user", "content": "x"},
    ]
    assert state_limit(messages, 3000) == (messages, "foreign system prompt")
