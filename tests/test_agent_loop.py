"""The rollout hook, through verl's own agent-loop interfaces: registry, Hydra config, instantiation and run().

GPU servers cannot run here, so their answers are replayed as each one gives them (vLLM reports an EOS stop and a
length stop both as "completed"; SGLang says "stop" or "length"; verl's resuming client says "length" once the
budget is used up). The CPU server runs for real.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import hydra
import pytest
import torch
from hydra.errors import InstantiationException
from transformers import AutoTokenizer
from verl.experimental.agent_loop.agent_loop import DictConfigWrap, ToolListWrap, _agent_loop_registry
from verl.utils.dataset.rl_dataset import RLHFDataset
from verl.workers.rollout.replica import TokenOutput

from verl_thinkprune import data
from verl_thinkprune.agent_loop import AGENT_LOOP_NAME, VALIDATION_FIELD, ThinkPruneAgentLoop
from verl_thinkprune.cpu.rollout import HFGenerator
from verl_thinkprune.iterative import compose_verl_config
from verl_thinkprune.prompts import length_system_prompt
from verl_thinkprune.reward_manager import LIMIT_FIELD, TRUNCATED_FIELD, is_truncated
from verl_thinkprune.tiny import tiny_model_dir
from verl_thinkprune.tiny.task import Problem, messages

RESPONSE_LENGTH = 96


@pytest.fixture(scope="module")
def tiny_model() -> Path:
    return tiny_model_dir()


def trainer_config(model: Path, *overrides: str):
    return compose_verl_config(
        [
            "+reward_manager=thinkprune",
            f"actor_rollout_ref.model.path={model}",
            f"data.max_response_length={RESPONSE_LENGTH}",
            *overrides,
        ]
    )


def agent_loop(config, client) -> ThinkPruneAgentLoop:
    """Built as verl's AgentLoopWorker builds each sample's agent loop (inside its running event loop)."""
    tokenizer = AutoTokenizer.from_pretrained(config.actor_rollout_ref.model.path)
    return hydra.utils.instantiate(
        config=_agent_loop_registry[config.actor_rollout_ref.rollout.agent.default_agent_loop],
        trainer_config=DictConfigWrap(config=config),
        server_manager=client,
        tokenizer=tokenizer,
        processor=None,
        hf_model_type="qwen2",
        dataset_cls=RLHFDataset,
        data_config=DictConfigWrap(config.data),
        tools=ToolListWrap([]),
    )


class ReplayedServer:
    """Answers every request with one fixed server output and remembers what was asked."""

    def __init__(self, output: TokenOutput) -> None:
        self.output = output
        self.requests: list[dict] = []

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs) -> TokenOutput:
        self.requests.append({"prompt_ids": prompt_ids, "sampling_params": dict(sampling_params)})
        return self.output.model_copy(deep=True)


class CPUServer:
    """verl's LLM client API in front of the CPU backend's generator (what HFRolloutServer runs)."""

    def __init__(self, generator: HFGenerator) -> None:
        self.generator = generator

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs) -> TokenOutput:
        return await self.generator.generate(prompt_ids, sampling_params["max_tokens"], sampling_params)


SAMPLING = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "logprobs": False}


def run(config, client, raw_prompt: list[dict] | None = None, validating: bool = False):
    """One sample through a fresh agent loop, as verl's AgentLoopWorker runs it (ThinkPrune's manager marks
    validation samples)."""

    async def one():
        fields = {"raw_prompt": raw_prompt or messages(Problem(31, 76, "+")), VALIDATION_FIELD: validating}
        return await agent_loop(config, client).run(SAMPLING, **fields)

    return asyncio.run(one())


def test_thinkprune_group_selects_the_hook_and_the_documented_override_turns_it_off(tiny_model):
    assert AGENT_LOOP_NAME in _agent_loop_registry  # registered by the package's verl plugin on `import verl`
    assert trainer_config(tiny_model).actor_rollout_ref.rollout.agent.default_agent_loop == AGENT_LOOP_NAME
    off = trainer_config(tiny_model, "actor_rollout_ref.rollout.agent.default_agent_loop=single_turn_agent")
    assert off.actor_rollout_ref.rollout.agent.default_agent_loop == "single_turn_agent"


@pytest.mark.parametrize(
    "server, ending, stop_reason, truncated",
    [
        ("vllm", "eos", "completed", False),
        ("vllm", "limit", "completed", True),  # vLLM hides the length stop: the tokens tell
        ("sglang", "eos", "stop", False),
        ("sglang", "limit", "length", True),
        ("resuming client", "eos at limit", "length", False),  # says "length" whenever the budget is used up
        ("any", "stop string", "completed", False),
    ],
)
def test_truncation_is_marked_from_how_generation_ended(tiny_model, server, ending, stop_reason, truncated):
    limit = 40
    loop_config = trainer_config(tiny_model, f"reward.reward_kwargs.token_limit={limit}")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    text = tokenizer.encode("<think> 30+70=100, 1+6=7, 100+7=107. Check: 31+76=107. Check: 31+76=107.")
    eos = tokenizer.eos_token_id
    tokens = {
        "eos": text[:10] + [eos],
        "limit": (text * 2)[:limit],
        "eos at limit": text[: limit - 1] + [eos],
        "stop string": text[:12],
    }[ending]
    replayed = ReplayedServer(TokenOutput(token_ids=tokens, stop_reason=stop_reason))
    output = run(loop_config, replayed)

    assert replayed.requests[0]["sampling_params"]["max_tokens"] == limit
    assert output.response_ids == tokens
    assert output.extra_fields[TRUNCATED_FIELD] is truncated


def test_limit_defaults_to_response_length_and_may_not_exceed_it(tiny_model):
    replayed = ReplayedServer(TokenOutput(token_ids=[1], stop_reason="completed"))
    run(trainer_config(tiny_model), replayed)
    assert replayed.requests[0]["sampling_params"]["max_tokens"] == RESPONSE_LENGTH

    with pytest.raises(InstantiationException, match="token_limit=97 must be a whole number of tokens in 1..96"):
        run(trainer_config(tiny_model, "reward.reward_kwargs.token_limit=97"), replayed)


def prepared_rows(token_limit: int | None) -> list[list[dict]]:
    """Prompts as `thinkprune-prepare-data` writes them (with the length prompt for token_limit, or without)."""
    source = data.SOURCES["deepscaler"]
    records = [{"problem": "What is 31+76?", "answer": "107"}]
    return [list(row["prompt"]) for row in data.convert(records, source, token_limit=token_limit)]


@pytest.mark.parametrize("validating", [False, True], ids=["training", "validation"])
@pytest.mark.parametrize("prepared_for", [4000, None], ids=["data-for-another-limit", "data-without-length-prompt"])
def test_the_prompt_the_server_receives_states_the_rounds_limit(tiny_model, validating, prepared_for):
    """Data prepared for round 1 (L=4000), or without the length prompt, used in a round at L=3000."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    replayed = ReplayedServer(TokenOutput(token_ids=[tokenizer.eos_token_id], stop_reason="completed"))
    config = trainer_config(tiny_model, "data.max_response_length=3000", "reward.reward_kwargs.token_limit=3000")

    run(config, replayed, raw_prompt=prepared_rows(prepared_for)[0], validating=validating)

    received = tokenizer.decode(replayed.requests[0]["prompt_ids"])
    assert received.count(length_system_prompt(3000)) == 1 and "4000" not in received
    assert "What is 31+76?" in received


def test_length_prompt_off_and_a_users_own_system_prompt_leave_prompts_alone(tiny_model, caplog):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    replayed = ReplayedServer(TokenOutput(token_ids=[tokenizer.eos_token_id], stop_reason="completed"))
    limit = "reward.reward_kwargs.token_limit=64"
    own = [{"role": "system", "content": "Be brief."}, *messages(Problem(1, 2, "+"))]

    run(trainer_config(tiny_model, limit, "actor_rollout_ref.rollout.custom.thinkprune.length_prompt=false"), replayed)
    with caplog.at_level("WARNING", logger="verl_thinkprune.agent_loop"):
        run(trainer_config(tiny_model, limit), replayed, raw_prompt=own)
    run(trainer_config(tiny_model, limit, "reward.reward_kwargs.add_length_prompt=false"), replayed)  # deprecated
    off, kept, deprecated_off = (tokenizer.decode(r["prompt_ids"]) for r in replayed.requests)

    assert "system" not in off and "system" not in deprecated_off
    assert "Be brief." in kept and length_system_prompt(64) not in kept
    assert "not ThinkPrune's length prompt" in caplog.text


def test_unknown_hook_setting_is_refused(tiny_model):
    replayed = ReplayedServer(TokenOutput(token_ids=[1], stop_reason="completed"))
    config = trainer_config(tiny_model, "+actor_rollout_ref.rollout.custom.thinkprune.lenght_prompt=true")
    with pytest.raises(InstantiationException, match="has no \\['lenght_prompt'\\]"):
        run(config, replayed)


def test_unlimited_validation_generates_validation_past_the_limit_and_training_within_it(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    long_answer = tokenizer.encode("<think> 30+70=100, 1+6=7, 100+7=107. Check: 31+76=107. Check: 31+76=107.")
    replayed = ReplayedServer(TokenOutput(token_ids=[*long_answer, tokenizer.eos_token_id], stop_reason="completed"))
    config = trainer_config(
        tiny_model,
        "reward.reward_kwargs.token_limit=40",
        "actor_rollout_ref.rollout.custom.thinkprune.unlimited_validation=true",
    )

    validation = run(config, replayed, validating=True)
    assert replayed.requests[-1]["sampling_params"]["max_tokens"] == RESPONSE_LENGTH
    assert validation.extra_fields[LIMIT_FIELD] == RESPONSE_LENGTH and validation.extra_fields[TRUNCATED_FIELD] is False

    training = run(config, replayed, validating=False)
    assert replayed.requests[-1]["sampling_params"]["max_tokens"] == 40
    assert training.extra_fields[LIMIT_FIELD] == 40
    assert training.extra_fields[TRUNCATED_FIELD] is True, "a response longer than L is cut off, whatever it holds"


def test_cpu_server_generation_respects_the_limit_and_marks_truncation(tiny_model):
    """The warm-started model thinks for 42 to ~145 tokens: a 30-token limit cuts every answer, 192 lets them finish."""
    torch.manual_seed(0)  # sampled at T=1: the same draws every run
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    server = CPUServer(HFGenerator(str(tiny_model), num_threads=2))
    problems = [Problem(a, b, op) for a, b, op in [(31, 76, "+"), (90, 45, "-"), (12, 9, "+"), (58, 67, "-")] * 4]

    async def rollouts(limit: int):
        config = trainer_config(
            tiny_model,
            f"data.max_response_length={max(limit, RESPONSE_LENGTH)}",
            f"reward.reward_kwargs.token_limit={limit}",
            "actor_rollout_ref.rollout.custom.thinkprune.length_prompt=false",  # the tiny model cannot read it
        )
        return await asyncio.gather(
            *(agent_loop(config, server).run(SAMPLING, raw_prompt=messages(p)) for p in problems)
        )

    for limit in (30, 192):
        outputs = asyncio.run(rollouts(limit))
        for output in outputs:
            ended_with_eos = output.response_ids[-1] == tokenizer.eos_token_id
            assert len(output.response_ids) <= limit
            assert output.extra_fields[TRUNCATED_FIELD] is (not ended_with_eos)
            assert ended_with_eos or len(output.response_ids) == limit
        finished = sum(not o.extra_fields[TRUNCATED_FIELD] for o in outputs)
        assert finished == 0 if limit == 30 else finished >= len(problems) // 2


def test_an_aborted_generation_counts_as_unfinished():
    assert is_truncated([7, 7], 5, {2}, stop_reason="aborted") is True
