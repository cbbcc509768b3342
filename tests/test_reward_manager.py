"""The reward contract, through verl's own reward path: RewardLoopWorker -> load_reward_manager -> run_single."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest
from conftest import GENERATION_EOS, make_batch
from verl.experimental.reward_loop import RewardLoopWorker
from verl.trainer.ppo.reward import load_reward_manager

from verl_thinkprune.reward_manager import ThinkPruneRewardManager, last_boxed_answer, response_score

LIMIT = 32


def score(config, batch) -> list[dict]:
    """Scores a batch as verl's reward worker does (built inside its event loop): every sample in flight at once."""

    async def run() -> list[dict]:
        return await RewardLoopWorker(config).compute_score_batch(batch)

    return asyncio.run(run())


def encode(tokenizer, text: str, *, eos: str | None = "eos") -> list[int]:
    ids = tokenizer.encode(text)
    if eos == "eos":
        ids.append(tokenizer.eos_token_id)
    elif eos == "generation":
        ids.append(tokenizer.convert_tokens_to_ids(GENERATION_EOS))
    return ids


def fill_to(tokenizer, ids: list[int], length: int) -> list[int]:
    """Pads a thought with filler tokens up to length, keeping ids' last token last."""
    filler = tokenizer.encode(" hmm")[0]
    return ids[:-1] + [filler] * (length - len(ids)) + ids[-1:]


def test_load_reward_manager_resolves_thinkprune_with_limit_from_response_length(thinkprune_config, tokenizer):
    manager = load_reward_manager(thinkprune_config(LIMIT), tokenizer)
    assert isinstance(manager, ThinkPruneRewardManager)
    assert manager.limit == LIMIT
    assert manager.eos_ids == {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(GENERATION_EOS)}


@pytest.mark.parametrize("padded", [False, True], ids=["v1-unpadded", "v0-right-padded"])
def test_truncated_response_scores_zero_even_with_a_correct_answer(thinkprune_config, tokenizer, padded):
    correct_unfinished = encode(tokenizer, "The answer is \\boxed{42}", eos=None)
    response = fill_to(tokenizer, correct_unfinished, LIMIT)  # L tokens, last one not EOS
    out = score(thinkprune_config(LIMIT), make_batch(tokenizer, [response], [42], padded_to=LIMIT if padded else None))
    assert out[0]["reward_score"] == 0.0
    assert out[0]["reward_extra_info"] == {"acc": 0.0, "truncated": 1, "response_length": LIMIT}


@pytest.mark.parametrize("padded", [False, True], ids=["v1-unpadded", "v0-right-padded"])
@pytest.mark.parametrize("eos", ["eos", "generation"], ids=["tokenizer-eos", "generation-config-eos"])
def test_response_that_ends_on_eos_at_the_limit_is_finished_and_graded(thinkprune_config, tokenizer, padded, eos):
    response = fill_to(tokenizer, encode(tokenizer, "The answer is \\boxed{42}.", eos=eos), LIMIT)
    out = score(
        thinkprune_config(LIMIT), make_batch(tokenizer, [response], ["42"], padded_to=LIMIT if padded else None)
    )
    assert out[0]["reward_score"] == 1.0
    assert out[0]["reward_extra_info"] == {"acc": 1.0, "truncated": 0, "response_length": LIMIT}


def test_mixed_padded_batch_scores_each_sample_by_its_own_valid_length(thinkprune_config, tokenizer):
    responses = [
        encode(tokenizer, "\\boxed{42}"),  # short, right
        encode(tokenizer, "\\boxed{41}"),  # short, wrong
        fill_to(tokenizer, encode(tokenizer, "\\boxed{42}", eos=None), LIMIT),  # truncated
        encode(tokenizer, "no answer at all"),  # finished without an answer
    ]
    out = score(thinkprune_config(LIMIT), make_batch(tokenizer, responses, [42] * 4, padded_to=LIMIT))
    assert [o["reward_score"] for o in out] == [1.0, 0.0, 0.0, 0.0]
    assert [o["reward_extra_info"]["truncated"] for o in out] == [0, 0, 1, 0]
    assert [o["reward_extra_info"]["response_length"] for o in out] == [len(r) for r in responses]
    assert len({tuple(sorted(o["reward_extra_info"])) for o in out}) == 1, "verl builds metric arrays from one key set"


def test_rollout_truncation_flag_is_preferred_over_the_token_rule(thinkprune_config, tokenizer):
    short_with_eos = encode(tokenizer, "\\boxed{42}")
    full_without_eos = fill_to(tokenizer, encode(tokenizer, "\\boxed{42}", eos=None), LIMIT)
    for response, flag, expected in [(short_with_eos, True, 0.0), (full_without_eos, False, 1.0)]:
        batch = make_batch(tokenizer, [response], [42], extra_fields=[{"truncated": flag}])
        out = score(thinkprune_config(LIMIT), batch)
        assert out[0]["reward_score"] == expected
        assert out[0]["reward_extra_info"]["truncated"] == int(flag)


def test_token_limit_in_reward_kwargs_overrides_response_length(thinkprune_config, tokenizer):
    config = thinkprune_config(LIMIT, "reward.reward_kwargs.token_limit=16")
    response = fill_to(tokenizer, encode(tokenizer, "\\boxed{42}", eos=None), 20)
    out = score(config, make_batch(tokenizer, [response], [42]))
    assert out[0]["reward_extra_info"]["truncated"] == 1 and out[0]["reward_score"] == 0.0


def test_token_limit_above_response_length_is_refused(thinkprune_config, tokenizer):
    with pytest.raises(ValueError, match="token_limit=64 must be in 1..32"):
        load_reward_manager(thinkprune_config(LIMIT, "reward.reward_kwargs.token_limit=64"), tokenizer)


EQUIVALENT = [
    ("0.5", "\\frac{1}{2}"),
    ("\\dfrac{1}{2}", "0.5"),
    ("033", 33),
    ("33", "\\boxed{033}"),
    ("2\\sqrt{2}", "\\sqrt{8}"),
    ("(1, 2)", "(1,2)"),
    ("2\\pi", "\\boxed{2\\pi}"),
    ("\\frac{\\sqrt{3}}{2}", "\\frac{1}{2}\\sqrt{3}"),
    ("1.5", 1.5),
]
DIFFERENT = [("34", 33), ("\\frac{1}{3}", "0.5"), ("(2, 1)", "(1,2)"), ("\\sqrt{2}", "2")]


@pytest.mark.parametrize(("answer", "truth"), EQUIVALENT + DIFFERENT)
def test_final_answer_graded_by_math_verify(thinkprune_config, tokenizer, answer, truth):
    response = encode(tokenizer, f"<think> work </think> The answer is \\boxed{{{answer}}}.")
    out = score(thinkprune_config(LIMIT * 4), make_batch(tokenizer, [response], [truth]))
    assert out[0]["reward_score"] == (1.0 if (answer, truth) in EQUIVALENT else 0.0)


def test_only_the_last_boxed_answer_counts(thinkprune_config, tokenizer):
    responses = [
        encode(tokenizer, "\\boxed{1} no wait \\boxed{42}"),
        encode(tokenizer, "\\boxed{42} no wait \\boxed{1}"),
    ]
    out = score(thinkprune_config(LIMIT), make_batch(tokenizer, responses, [42, 42], padded_to=LIMIT))
    assert [o["reward_score"] for o in out] == [1.0, 0.0]


def test_pathological_answer_scores_zero_within_seconds_without_blocking_others(thinkprune_config, tokenizer):
    responses = [encode(tokenizer, "\\boxed{9^{9^{9^{9^{9}}}}}"), encode(tokenizer, "\\boxed{42}")]
    start = time.monotonic()
    out = score(
        thinkprune_config(LIMIT, "reward.reward_kwargs.grading_timeout=8"),
        make_batch(tokenizer, responses, [5, 42], padded_to=LIMIT),
    )
    assert time.monotonic() - start < 20
    assert [o["reward_score"] for o in out] == [0.0, 1.0]


def test_grading_works_off_the_main_thread(thinkprune_config, tokenizer):
    """verl runs reward code in executor threads and async Ray actors, where signal.alarm raises."""
    batch = make_batch(tokenizer, [encode(tokenizer, "\\boxed{\\frac{1}{2}}")], ["0.5"])
    result: list = []
    worker = threading.Thread(target=lambda: result.extend(score(thinkprune_config(LIMIT), batch)))
    worker.start()
    worker.join(timeout=60)
    assert result and result[0]["reward_score"] == 1.0


BAD_RESPONSES = {
    "empty": "",
    "unicode-noise": "\u202e\ud7ff\U0001f600 \\boxed{\u00e9\u0301} \x00",
    "unbalanced-braces": "\\boxed{42 and then {{{ } never closed",
    "boxed-without-braces": "\\boxed 42",
}


@pytest.mark.parametrize("text", BAD_RESPONSES.values(), ids=BAD_RESPONSES.keys())
def test_bad_responses_score_zero_without_raising(thinkprune_config, tokenizer, text):
    out = score(
        thinkprune_config(LIMIT * 4), make_batch(tokenizer, [encode(tokenizer, text)], [42], padded_to=LIMIT * 4)
    )
    assert out[0]["reward_score"] == 0.0 and out[0]["reward_extra_info"]["truncated"] == 0


def test_megabyte_response_is_graded_quickly(thinkprune_config, tokenizer):
    thought = encode(tokenizer, "Wait, let me verify 12 + 30 = 42. " * 30_000 + "\\boxed{42}")
    assert len(tokenizer.decode(thought)) > 1_000_000
    start = time.monotonic()
    out = score(thinkprune_config(len(thought)), make_batch(tokenizer, [thought], [42]))
    assert out[0]["reward_score"] == 1.0
    assert time.monotonic() - start < 30


@pytest.mark.parametrize("truth", [None, ""], ids=["none", "empty"])
def test_missing_ground_truth_scores_zero_and_warns_which_sample(thinkprune_config, tokenizer, caplog, truth):
    batch = make_batch(tokenizer, [encode(tokenizer, "\\boxed{42}")], [truth])
    with caplog.at_level(logging.WARNING, logger="verl_thinkprune.reward_manager"):
        out = score(thinkprune_config(LIMIT), batch)
    assert out[0]["reward_score"] == 0.0
    assert "no ground truth for sample 0" in caplog.text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("a \\boxed{1} b \\boxed{ {x}^{2} } c", "{x}^{2}"),
        ("\\boxed{unclosed", None),
        ("no box", None),
        ("\\boxed{" + "9" * 2000 + "}", None),
    ],
)
def test_last_boxed_answer(text, expected):
    assert last_boxed_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "truth", "expected"),
    [
        ("<think> 1/2 </think> \\boxed{0.5}", "\\frac{1}{2}", 1.0),
        ("\\boxed{42} wait \\boxed{41}", 42, 0.0),
        ("no answer", 42, 0.0),
        ("\\boxed{42}", None, 0.0),
    ],
)
def test_response_score_is_the_reward_rule_for_evaluation(text, truth, expected):
    """Evaluation scores finished responses with the reward's own rule."""
    assert response_score(text, truth) == expected
