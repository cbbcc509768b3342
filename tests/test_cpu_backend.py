"""The CPU backend's parts that make it fast: the rollout server's batching and the fast-polling replay buffer."""

from __future__ import annotations

import asyncio

import pytest
import torch
from transformers import AutoTokenizer
from verl.utils.import_utils import load_extern_object

from verl_thinkprune.cpu.replay_buffer import POLL_INTERVAL_S
from verl_thinkprune.cpu.rollout import HFGenerator, HFRolloutServer
from verl_thinkprune.iterative import compose_verl_config
from verl_thinkprune.tiny import tiny_model_dir
from verl_thinkprune.tiny.task import Problem, messages

T1 = {"temperature": 1.0, "top_p": 1.0, "top_k": -1}


class RecordingGenerator(HFGenerator):
    """The real generator, remembering the size of every batch it generated."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[int] = []

    def generate_batch(self, batch):
        self.batches.append(len(batch))
        return super().generate_batch(batch)


@pytest.fixture(scope="module")
def prompts() -> list[list[int]]:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir())
    problems = [Problem(31, 76, "+"), Problem(90, 45, "-"), Problem(12, 9, "+"), Problem(58, 67, "-")]
    return [
        tokenizer.apply_chat_template(messages(p), add_generation_prompt=True, tokenize=True, return_dict=True)[
            "input_ids"
        ]
        for p in problems
    ]


async def spread(generator: HFGenerator, requests: list[tuple[list[int], int, dict]], gap_s: float):
    """Requests sent one by one, gap_s apart, as an agent-loop worker sends a step's requests."""

    async def send(index: int, request):
        await asyncio.sleep(index * gap_s)
        return await generator.generate(*request)

    return await asyncio.gather(*(send(i, r) for i, r in enumerate(requests)))


def test_requests_arriving_one_by_one_are_generated_as_one_batch(prompts):
    torch.manual_seed(0)
    generator = RecordingGenerator(str(tiny_model_dir()), num_threads=1)
    requests = [(p, 40, T1) for p in prompts * 4]

    outputs = asyncio.run(spread(generator, requests, gap_s=generator.batch_quiet_s / 10))

    assert generator.batches == [16]
    assert all(0 < len(o.token_ids) <= 40 for o in outputs)
    assert {o.stop_reason for o in outputs} <= {"completed", "length"}


def test_requests_with_other_settings_or_limits_are_batched_apart(prompts):
    generator = RecordingGenerator(str(tiny_model_dir()), num_threads=1)
    greedy = {**T1, "temperature": 0.0}
    requests = [(prompts[0], 20, T1), (prompts[1], 20, greedy), (prompts[2], 30, T1), (prompts[3], 20, T1)]

    outputs = asyncio.run(spread(generator, requests, gap_s=0))

    assert sorted(generator.batches) == [1, 1, 2]
    assert [len(o.token_ids) <= limit for o, (_, limit, _) in zip(outputs, requests, strict=True)] == [True] * 4


def test_greedy_output_and_log_probs_do_not_depend_on_the_batch(prompts):
    generator = HFGenerator(str(tiny_model_dir()), num_threads=1)
    greedy = {**T1, "temperature": 0.0, "logprobs": True}
    alone = asyncio.run(spread(generator, [(prompts[0], 30, greedy)], gap_s=0))[0]
    together = asyncio.run(spread(generator, [(p, 30, greedy) for p in prompts], gap_s=0))[0]

    assert together.token_ids == alone.token_ids
    assert together.log_probs == pytest.approx(alone.log_probs, abs=1e-4)


def test_unknown_server_options_are_refused_naming_the_known_ones():
    with pytest.raises(
        ValueError, match="unknown .*engine_kwargs.hf options \\['batch_size'\\]; known: .*max_batch_size"
    ):
        HFRolloutServer.__ray_actor_class__(str(tiny_model_dir()), 96, 128, {"batch_size": 8})


def test_the_cpu_group_polls_for_finished_rollouts_every_50_ms():
    config = compose_verl_config(["+platform=cpu", "+reward_manager=thinkprune"])
    sampler = config.trainer.v1.sampler
    buffer_class = load_extern_object(sampler.custom_sampler.path, sampler.custom_sampler.name)  # as verl loads it
    arguments = {
        "trainer_config": config.trainer.v1.sync,
        "max_off_policy_threshold": sampler.max_off_policy_threshold,
        "max_off_policy_strategy": sampler.max_off_policy_strategy,
        "sampler_kwargs": sampler.sampler_kwargs,
    }

    assert buffer_class(trainer_mode="sync", **arguments).poll_interval == POLL_INTERVAL_S == 0.05
    with pytest.raises(ValueError, match="trainer.v1.sampler.custom_sampler.path=null"):
        buffer_class(trainer_mode="separate_async", **arguments)


def test_the_cpu_group_pads_the_actors_batches_because_packed_sequences_would_attend_to_each_other():
    """verl packs a micro-batch into one row when use_remove_padding is on; only flash-attn keeps the sequences of a
    pack apart. Under the CPU backend's SDPA a packed sequence would see the ones before it: wrong log-probs."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir(), attn_implementation="sdpa").eval()
    first, second = torch.tensor([[5, 6, 7, 8, 9]]), torch.tensor([[10, 11, 12]])
    with torch.no_grad():
        alone = model(input_ids=second).logits[0]
        packed = model(input_ids=torch.cat([first, second], 1), position_ids=torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2]]))
    assert not torch.allclose(packed.logits[0, 5:], alone, atol=1e-3), "SDPA does not separate packed sequences"

    config = compose_verl_config(["+platform=cpu", "+reward_manager=thinkprune"])
    assert config.actor_rollout_ref.model.override_config.attn_implementation == "sdpa"
    assert config.actor_rollout_ref.model.use_remove_padding is False
