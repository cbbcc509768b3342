"""The one HF generation core (verl_thinkprune.generation), with the tiny model built locally."""

from __future__ import annotations

import json
import shutil

import pytest

from verl_thinkprune.generation import Sampling, TransformersGenerator, cut_completion, special_ids
from verl_thinkprune.tiny import tiny_model_dir
from verl_thinkprune.tiny.task import Problem, messages

GREEDY = Sampling(temperature=0.0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def generator() -> TransformersGenerator:
    return TransformersGenerator(tiny_model_dir())


def prompts(generator: TransformersGenerator, *problems: Problem) -> list[list[int]]:
    return [
        generator.tokenizer.apply_chat_template(
            messages(p), add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
        for p in problems
    ]


def test_cut_keeps_the_first_eos_and_says_how_the_row_ended(tokenizer):
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    text = tokenizer.encode("Let me compute 12 + 30 = 42. </think> The answer")

    assert cut_completion(text + [eos, pad, pad], {eos}) == (text + [eos], "eos")
    assert cut_completion(text, {eos}) == (text, None)
    cut, ending = cut_completion(text + [eos], {eos}, "</think>", tokenizer)
    assert ending == "stop" and tokenizer.decode(cut).endswith("</think>") and cut == text[: len(cut)]
    assert cut_completion(text, {eos}, "never", tokenizer) == (text, None)


def test_padding_that_reuses_the_eos_id_after_a_stop_string_is_no_eos(tokenizer):
    eos = tokenizer.eos_token_id
    thought = tokenizer.encode("Let me verify: 42 </think>")
    assert cut_completion(thought + [eos, eos], {eos}, "</think>", tokenizer) == (thought, "stop")


def test_special_ids_come_from_the_tokenizer_and_the_generation_config(model_dir, tokenizer):
    pad_id, eos_ids = special_ids(tokenizer, model_dir)
    generation_eos = json.loads((model_dir / "generation_config.json").read_text())["eos_token_id"]
    assert pad_id == tokenizer.pad_token_id
    assert eos_ids == {tokenizer.eos_token_id, *generation_eos}


def test_a_row_generates_the_same_alone_and_left_padded_in_a_batch(generator):
    short, long = prompts(generator, Problem(3, 4, "+"), Problem(58, 67, "-"))
    assert len(short) < len(long), "the short prompt is left-padded"

    alone = generator.generate([short], 40, GREEDY)
    batched = generator.generate([long, short], 40, GREEDY)

    assert batched[1].token_ids == alone[0].token_ids


def test_finish_tells_eos_from_the_budget_running_out(generator):
    eos_ids = generator.eos_ids
    batch = prompts(generator, *[Problem(31, 76, "+")] * 4)

    cut_short = generator.generate(batch, 8, Sampling())
    finished = generator.generate(batch, 200, Sampling())

    assert all(c.finish == "length" and len(c.token_ids) == 8 for c in cut_short)
    assert all(c.finish == "eos" and c.token_ids[-1] in eos_ids for c in finished), "the model answers in ~150 tokens"
    assert all(not eos_ids & set(c.token_ids[:-1]) for c in finished), "cut at the first EOS"


def test_log_probs_are_those_of_the_sampled_tokens(generator):
    batch = prompts(generator, Problem(12, 9, "+"), Problem(90, 45, "-"))
    for completion in generator.generate(batch, 30, Sampling(temperature=0.7), log_probs=True):
        assert len(completion.log_probs) == len(completion.token_ids)
        assert all(value <= 0 for value in completion.log_probs)
    greedy = generator.generate(batch, 30, GREEDY, log_probs=True)
    assert all(max(c.log_probs) <= 0 and min(c.log_probs) > -5 for c in greedy), "argmax tokens are likely ones"


def test_a_tokenizer_without_pad_token_pads_with_an_eos_id(generator, tmp_path):
    model = shutil.copytree(tiny_model_dir(), tmp_path / "model")
    config_path = model / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["pad_token"] = None  # absent, Qwen2's tokenizer class would supply its default
    config_path.write_text(json.dumps(config))
    no_pad = TransformersGenerator(model)
    batch = prompts(generator, Problem(3, 4, "+"), Problem(58, 67, "-"))

    assert no_pad.pad_id == min(no_pad.eos_ids)
    assert [c.token_ids for c in no_pad.generate(batch, 40, GREEDY)] == [
        c.token_ids for c in generator.generate(batch, 40, GREEDY)
    ]
