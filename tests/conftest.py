"""Shared fixtures: a real byte-level BPE tokenizer built locally, verl configs composed by Hydra, DataProto batches."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import DictConfig
from tokenizers import ByteLevelBPETokenizer
from transformers import PreTrainedTokenizerFast
from verl import DataProto

REPO = Path(__file__).resolve().parents[1]
SHARED_AIME = REPO.parent / "shared" / "data" / "aime22_23_24.parquet"

CORPUS = [
    "<think> Let me compute 12 + 30 = 42. Wait, let me verify: 42 - 30 = 12. </think> The answer is \\boxed{42}.",
    "So x = \\frac{1}{2}, and \\sqrt{2} \\pi (1, 2) 0.5 033 \\dfrac{3}{4} \\boxed{\\frac{1}{2}}",
]
EOS, GENERATION_EOS, PAD = "<|endoftext|>", "<|im_end|>", "<|pad|>"


def build_model_dir(path: Path) -> Path:
    """A model directory with a real tokenizer and a generation config that adds a second EOS id (as Qwen's does)."""
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS * 20, vocab_size=400, min_frequency=1, special_tokens=[EOS, GENERATION_EOS, PAD])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS, pad_token=PAD)
    tokenizer.save_pretrained(path)
    eos_ids = [tokenizer.convert_tokens_to_ids(t) for t in (EOS, GENERATION_EOS)]
    (path / "generation_config.json").write_text(json.dumps({"eos_token_id": eos_ids}))
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """Two torch threads on a busy 2-core machine make generation 100x slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return build_model_dir(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="session")
def tokenizer(model_dir) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast.from_pretrained(model_dir)


@pytest.fixture
def thinkprune_config(model_dir) -> Callable[..., DictConfig]:
    from verl_thinkprune.iterative import compose_verl_config  # conftest itself must import without the package

    def make(limit: int = 32, *extra: str) -> DictConfig:
        return compose_verl_config(
            [
                "+reward_manager=thinkprune",
                f"data.max_response_length={limit}",
                f"actor_rollout_ref.model.path={model_dir}",
                *extra,
            ]
        )

    return make


def make_batch(
    tokenizer,
    responses: list[list[int]],
    ground_truths: list[object],
    *,
    padded_to: int | None = None,
    extra_fields: list[dict] | None = None,
) -> DataProto:
    """A batch as verl 0.9.1 sends it to reward managers.

    padded_to=None: the V1 agent-loop shape (one sample per call, unpadded response, all-ones mask);
    padded_to=L: the v0 shape (responses right-padded to L, the mask marking valid tokens).
    """
    prompt = tokenizer.encode("What is 12 + 30?")
    width = padded_to or max(len(r) for r in responses)
    rows = [r + [tokenizer.pad_token_id] * (width - len(r)) for r in responses]
    masks = [[1] * len(prompt) + [1] * len(r) + [0] * (width - len(r)) for r in responses]
    if padded_to is None:
        assert len({len(r) for r in responses}) == 1, "the V1 shape is one unpadded response per call"
    non_tensors = {
        "data_source": np.array(["tiny"] * len(responses), dtype=object),
        "reward_model": np.array([{"ground_truth": gt, "style": "rule"} for gt in ground_truths], dtype=object),
        "extra_info": np.array([{"index": i} for i in range(len(responses))], dtype=object),
    }
    if extra_fields is not None:
        non_tensors["tool_extra_fields"] = np.array(extra_fields, dtype=object)
    return DataProto.from_dict(
        tensors={
            "prompts": torch.tensor([prompt] * len(responses)),
            "responses": torch.tensor(rows),
            "attention_mask": torch.tensor(masks),
        },
        non_tensors=non_tensors,
    )
