"""The reward contract, through verl's own reward path: RewardLoopWorker -> load_reward_manager -> run_single."""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import subprocess
import sys
import threading
import time

import pytest
from conftest import GENERATION_EOS, make_batch
from verl.experimental.reward_loop import RewardLoopWorker
from verl.trainer.ppo.reward import load_reward_manager

from verl_thinkprune.reward_manager import (
    ANSWER_TAIL_TOKENS,
    GRADING_TIMEOUT,
    LIMIT_FIELD,
    TRUNCATED_FIELD,
    ThinkPruneRewardManager,
    final_answer,
    is_truncated,
    limit_and_eos_ids,
    response_score,
)

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


def extra_info(limit: int, *, acc: float, truncated: int, length: int) -> dict:
    return {"acc": acc, "truncated": truncated, "response_length": length, "token_limit": limit}


def test_load_reward_manager_resolves_thinkprune_with_its_defaults(thinkprune_config, tokenizer):
    manager = load_reward_manager(thinkprune_config(LIMIT), tokenizer)
    assert isinstance(manager, ThinkPruneRewardManager)
    assert manager.limit == LIMIT
    assert manager.eos_ids == {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(GENERATION_EOS)}
    assert manager.grading_timeout == GRADING_TIMEOUT and manager.answer_boxes == "final"


@pytest.mark.parametrize("padded", [False, True], ids=["v1-unpadded", "v0-right-padded"])
def test_truncated_response_scores_zero_even_with_a_correct_answer(thinkprune_config, tokenizer, padded):
    correct_unfinished = encode(tokenizer, "The answer is \\boxed{42}", eos=None)
    response = fill_to(tokenizer, correct_unfinished, LIMIT)  # L tokens, last one not EOS
    out = score(thinkprune_config(LIMIT), make_batch(tokenizer, [response], [42], padded_to=LIMIT if padded else None))
    assert out[0]["reward_score"] == 0.0
    assert out[0]["reward_extra_info"] == extra_info(LIMIT, acc=0.0, truncated=1, length=LIMIT)


@pytest.mark.parametrize("padded", [False, True], ids=["v1-unpadded", "v0-right-padded"])
@pytest.mark.parametrize("eos", ["eos", "generation"], ids=["tokenizer-eos", "generation-config-eos"])
def test_response_that_ends_on_eos_at_the_limit_is_finished_and_graded(thinkprune_config, tokenizer, padded, eos):
    response = fill_to(tokenizer, encode(tokenizer, "The answer is \\boxed{42}.", eos=eos), LIMIT)
    out = score(
        thinkprune_config(LIMIT), make_batch(tokenizer, [response], ["42"], padded_to=LIMIT if padded else None)
    )
    assert out[0]["reward_score"] == 1.0
    assert out[0]["reward_extra_info"] == extra_info(LIMIT, acc=1.0, truncated=0, length=LIMIT)


def test_response_longer_than_the_limit_is_truncated_even_when_it_ends_on_eos(thinkprune_config, tokenizer):
    """Without the rollout hook, generation runs to the response length: a token_limit below it still holds."""
    config = thinkprune_config(LIMIT, "reward.reward_kwargs.token_limit=16")
    response = fill_to(tokenizer, encode(tokenizer, "\\boxed{42}"), 20)
    out = score(config, make_batch(tokenizer, [response], [42]))
    assert out[0]["reward_score"] == 0.0
    assert out[0]["reward_extra_info"] == extra_info(16, acc=0.0, truncated=1, length=20)


def test_sample_is_scored_at_the_limit_its_rollout_recorded(thinkprune_config, tokenizer):
    """The hook records each sample's limit: above L for "unlimited validation" samples, L in training."""
    response = fill_to(tokenizer, encode(tokenizer, "\\boxed{42}"), 40)
    for recorded, expected_score in [(48, 1.0), (32, 0.0)]:
        batch = make_batch(tokenizer, [response], [42], extra_fields=[{LIMIT_FIELD: recorded}])
        out = score(thinkprune_config(LIMIT * 2, f"reward.reward_kwargs.token_limit={LIMIT}"), batch)
        assert out[0]["reward_score"] == expected_score
        assert out[0]["reward_extra_info"] == extra_info(
            recorded, acc=expected_score, truncated=int(not expected_score), length=40
        )


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
    assert {tuple(sorted(o["reward_extra_info"])) for o in out} == {
        ("acc", "response_length", "token_limit", "truncated")
    }, "verl builds metric arrays from one key set"


def test_rollout_truncation_flag_is_preferred_over_the_token_rule_within_the_limit(thinkprune_config, tokenizer):
    short_with_eos = encode(tokenizer, "\\boxed{42}")
    full_without_eos = fill_to(tokenizer, encode(tokenizer, "\\boxed{42}", eos=None), LIMIT)
    for response, flag, expected in [(short_with_eos, True, 0.0), (full_without_eos, False, 1.0)]:
        batch = make_batch(tokenizer, [response], [42], extra_fields=[{TRUNCATED_FIELD: flag}])
        out = score(thinkprune_config(LIMIT), batch)
        assert out[0]["reward_score"] == expected
        assert out[0]["reward_extra_info"]["truncated"] == int(flag)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("token_limit=64", "reward.reward_kwargs.token_limit=64 must be a whole number of tokens in 1..32"),
        ("token_limit=0", "reward.reward_kwargs.token_limit=0 must be a whole number of tokens in 1..32"),
        ("grading_timeout=0", "reward.reward_kwargs.grading_timeout=0 must be a positive number of seconds"),
        ("grading_timeout=-5", "reward.reward_kwargs.grading_timeout=-5 must be a positive number of seconds"),
        ("answer_boxes=first", "reward.reward_kwargs.answer_boxes='first' must be one of ('final', 'last')"),
    ],
)
def test_invalid_settings_are_refused_with_a_clear_message(thinkprune_config, tokenizer, override, message):
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        load_reward_manager(thinkprune_config(LIMIT, f"reward.reward_kwargs.{override}"), tokenizer)
    assert "\n" not in str(error.value)


def test_a_model_without_any_eos_id_is_refused(thinkprune_config, tokenizer, tmp_path):
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer.name_or_path + "/" + name, tmp_path / name)
    (tmp_path / "generation_config.json").write_text("{}")
    config = thinkprune_config(LIMIT, f"actor_rollout_ref.model.path={tmp_path}")
    no_eos = type(tokenizer).from_pretrained(tmp_path, eos_token=None)
    assert no_eos.eos_token_id is None
    with pytest.raises(ValueError, match="ThinkPrune needs an EOS token id"):
        limit_and_eos_ids(config, no_eos)


def test_limit_and_eos_ids_reads_the_generation_config_once_per_model_path(thinkprune_config, tokenizer, tmp_path):
    """The rollout hook sets up once per sample: the model's generation config is read once per process."""
    model = tmp_path / "model"
    shutil.copytree(tokenizer.name_or_path, model)
    config = thinkprune_config(LIMIT, f"actor_rollout_ref.model.path={model}")
    first = limit_and_eos_ids(config, tokenizer)
    (model / "generation_config.json").unlink()
    assert (
        limit_and_eos_ids(config, tokenizer)
        == first
        == (LIMIT, frozenset(load_reward_manager(config, tokenizer).eos_ids))
    )


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


FINAL_ANSWERS = [
    ("two boxes are one answer", "The pairs are \\boxed{(1,2)} and \\boxed{(2,1)}.", "(1,2), (2,1)", 1.0),
    ("equations in two boxes", "So \\boxed{k=45} and \\boxed{n=2}.", "k = 45, n = 2", 1.0),
    ("a hedge is not the answer", "It is \\boxed{2} or \\boxed{3}.", "2", 0.0),
    ("a box in the thinking does not count", "<think> maybe \\boxed{7} </think> It is \\boxed{8}.", "7", 0.0),
    ("the thinking's box alone is no answer", "<think> it is \\boxed{7} </think> It is 7.", "7", 0.0),
    ("an earlier sentence's box does not count", "\\boxed{1}. No wait: \\boxed{42}.", "42", 1.0),
    ("a truth in several boxes", "The primes are \\boxed{2, 3}.", "\\boxed{2} and \\boxed{3}", 1.0),
]


@pytest.mark.parametrize(
    ("response", "truth", "expected"), [c[1:] for c in FINAL_ANSWERS], ids=[c[0] for c in FINAL_ANSWERS]
)
def test_the_final_answer_is_every_box_of_its_last_sentence_after_the_thinking(
    thinkprune_config, tokenizer, response, truth, expected
):
    out = score(thinkprune_config(LIMIT * 4), make_batch(tokenizer, [encode(tokenizer, response)], [truth]))
    assert out[0]["reward_score"] == expected


@pytest.mark.parametrize(
    ("response", "truth"),
    [
        ("The pairs are \\boxed{(1,2)} and, as" + " we saw" * 60 + ", \\boxed{(2,1)}", "(1,2), (2,1)"),
        ("The answer is \\boxed{42}, which" + " we saw" * 60, "42"),
    ],
    ids=["final-sentence-longer-than-the-tail", "box-before-the-tail"],
)
def test_final_answer_reaching_back_past_the_decoded_tail_is_read_whole(thinkprune_config, tokenizer, response, truth):
    """Only the response's last tokens are decoded first: an answer reaching further back must still be read whole."""
    ids = encode(tokenizer, response)
    assert len(ids) > 2 * ANSWER_TAIL_TOKENS
    out = score(thinkprune_config(len(ids)), make_batch(tokenizer, [ids], [truth]))
    assert out[0]["reward_score"] == 1.0


def test_answer_boxes_last_grades_the_last_box_alone(thinkprune_config, tokenizer):
    """The official ThinkPrune code's rule, selectable: the last box of the whole response."""
    response = encode(tokenizer, "<think> \\boxed{1} </think> The pairs are \\boxed{(1,2)} and \\boxed{(2,1)}.")
    config = thinkprune_config(LIMIT * 2, "reward.reward_kwargs.answer_boxes=last")
    out = score(config, make_batch(tokenizer, [response] * 2, ["(1,2), (2,1)", "(2,1)"], padded_to=LIMIT * 2))
    assert [o["reward_score"] for o in out] == [0.0, 1.0]


def test_truncated_response_scores_zero_whatever_answer_it_holds(thinkprune_config, tokenizer):
    cut_off = fill_to(
        tokenizer, encode(tokenizer, "<think> </think> \\boxed{(1,2)} and \\boxed{(2,1)}.", eos=None), LIMIT
    )
    out = score(thinkprune_config(LIMIT), make_batch(tokenizer, [cut_off], ["(1,2), (2,1)"]))
    assert out[0]["reward_score"] == 0.0 and out[0]["reward_extra_info"]["truncated"] == 1


def test_pathological_answer_scores_zero_within_seconds_without_blocking_others(thinkprune_config, tokenizer):
    responses = [encode(tokenizer, "\\boxed{9^{9^{9^{9^{9}}}}}"), encode(tokenizer, "\\boxed{42}")]
    start = time.monotonic()
    out = score(
        thinkprune_config(LIMIT, "reward.reward_kwargs.grading_timeout=8"),
        make_batch(tokenizer, responses, [5, 42], padded_to=LIMIT),
    )
    assert time.monotonic() - start < 20
    assert [o["reward_score"] for o in out] == [0.0, 1.0]


def test_first_answer_of_a_process_is_not_lost_to_the_start_of_the_grading_pool():
    """verl's math-verify pool takes seconds to start (each process imports verl): a fresh reward worker's first
    answers (the round's baseline validation) must not pay for it out of their grading timeout."""
    code = (
        "from verl_thinkprune.reward_manager import response_score as s; print(s('\\\\boxed{0.5}', '1/2', timeout=1))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.stdout.split()[-1:] == ["1.0"], result.stderr[-2000:]


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
    ("text", "boxes", "expected"),
    [
        ("\\boxed{\\frac{1}{2}}", "final", "\\frac{1}{2}"),
        ("a \\boxed{1} b \\boxed{ {x}^{2} } c", "final", "1, {x}^{2}"),
        ("a \\boxed{1} b \\boxed{ {x}^{2} } c", "last", "{x}^{2}"),
        ("x = \\boxed{3}, y = \\boxed{3}", "final", "3"),
        ("\\boxed{1}.\n\\boxed{2}", "final", "2"),
        ("<think> \\boxed{1} </think> \\boxed{2}", "final", "2"),
        ("<think> \\boxed{1} </think> none", "final", None),
        ("<think> \\boxed{1} </think> none", "last", "1"),
        ("\\boxed{unclosed", "final", None),
        ("no box", "final", None),
        ("\\boxed{" + "9" * 2000 + "}", "final", None),
        ("\\boxed{" + "9" * 600 + "} and \\boxed{" + "8" * 600 + "}", "final", None),
    ],
)
def test_final_answer(text, boxes, expected):
    assert final_answer(text, boxes) == expected


@pytest.mark.parametrize(
    ("token_ids", "stop_reason", "flag", "expected"),
    [
        ([5, 6, 0], None, None, False),  # ended on EOS within the limit
        ([5, 6, 7, 0], None, None, False),  # ended on EOS at the limit
        ([5, 6, 7, 8, 0], None, None, True),  # longer than the limit, whatever its last token
        ([5, 6, 7, 8, 0], "completed", False, True),  # ... and whatever the rollout said
        ([5, 6, 7, 8], None, None, True),  # the limit used up without EOS
        ([5, 6], "completed", None, False),  # stopped early without EOS: a stop string
        ([5, 6], "length", None, True),  # the server says cut off (SGLang, verl's resuming client)
        ([5, 6], "abort", None, True),
        ([5, 0], "length", None, False),  # EOS wins over the stop reason
        ([5, 0], None, True, True),  # the rollout's flag wins within the limit
        ([5, 6, 7, 8], None, False, False),
    ],
)
def test_is_truncated(token_ids, stop_reason, flag, expected):
    assert is_truncated(token_ids, 4, {0}, stop_reason=stop_reason, flag=flag) is expected


@pytest.mark.parametrize(
    ("text", "truth", "expected"),
    [
        ("<think> 1/2 </think> \\boxed{0.5}", "\\frac{1}{2}", 1.0),
        ("\\boxed{42}. Wait: \\boxed{41}", 42, 0.0),
        ("no answer", 42, 0.0),
        ("\\boxed{42}", None, 0.0),
    ],
)
def test_response_score_is_the_reward_rule_for_evaluation(text, truth, expected):
    """Evaluation scores finished responses with the reward's own rule."""
    assert response_score(text, truth) == expected
