"""A tiny Qwen2 causal LM and tokenizer for the tiny task, built and warm-started locally on CPU (no hub).

``tiny_model_dir()`` returns a cached, ready model: built once per settings under
``$VERL_THINKPRUNE_CACHE`` (default ``~/.cache/verl_thinkprune``) in ``tiny-<hash of settings>``, then reused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from verl_thinkprune.tiny import task

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>")
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class TinySettings:
    """Everything that determines the built model; its hash names the cache directory."""

    vocab_size: int = 320
    hidden_size: int = 64
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    ffn_size: int = 256
    max_positions: int = 256
    max_checks: int = 6
    steps: int = 3600
    batch_size: int = 16
    lr: float = 4e-3
    warmup_steps: int = 60
    length_buckets: int = 16  # each batch comes from a pool of batch_size x length_buckets examples sorted by length
    loss_tokens_per_example: int = 90  # the loss's fixed divisor per example: about a mean response's tokens
    seed: int = 0
    format_version: int = 2

    def key(self) -> str:
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def cache_root() -> Path:
    return Path(os.environ.get("VERL_THINKPRUNE_CACHE") or Path.home() / ".cache" / "verl_thinkprune")


def build_tokenizer(settings: TinySettings):
    """Byte-level BPE trained on the task's text, one token per digit so numbers are spelled digit by digit."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(settings.seed)
    corpus = []
    for _ in range(2000):
        problem = task.random_problem(rng)
        corpus += [problem.prompt, task.response(problem, rng.randint(0, settings.max_checks), rng)]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=settings.vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        additional_special_tokens=["<|im_start|>", "<|endoftext|>"],
        padding_side="left",  # saved with the tokenizer: batched generation with right padding goes wrong
    )
    tokenizer.add_tokens(["<think>", "</think>"])
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(settings: TinySettings, tokenizer):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=settings.hidden_size,
        intermediate_size=settings.ffn_size,
        num_hidden_layers=settings.num_layers,
        num_attention_heads=settings.num_heads,
        num_key_value_heads=settings.num_kv_heads,
        max_position_embeddings=settings.max_positions,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        rope_theta=10000.0,
    )
    torch.manual_seed(settings.seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    return model


def training_example(tokenizer, rng: random.Random, max_checks: int) -> tuple[list[int], int]:
    """Token ids of prompt + response + EOS, and the prompt length (the loss covers the response only)."""
    problem = task.random_problem(rng)
    prompt_ids = tokenizer.apply_chat_template(
        task.messages(problem), add_generation_prompt=True, tokenize=True, return_dict=True
    )["input_ids"]
    response_ids = tokenizer.encode(task.response(problem, rng.randint(0, max_checks), rng))
    return prompt_ids + response_ids + [tokenizer.eos_token_id], len(prompt_ids)


def training_batches(tokenizer, settings: TinySettings, rng: random.Random) -> Iterator[list[tuple[list[int], int]]]:
    """Batches of examples of similar length, in random order: padding, not arithmetic, is what a CPU step spends."""
    size = settings.batch_size
    while True:
        pool = [training_example(tokenizer, rng, settings.max_checks) for _ in range(size * settings.length_buckets)]
        pool.sort(key=lambda example: len(example[0]))
        batches = [pool[start : start + size] for start in range(0, len(pool), size)]
        rng.shuffle(batches)
        yield from batches


def warm_start(model, tokenizer, settings: TinySettings) -> float:
    """Supervised fine-tuning on the task (AdamW, warm-up then cosine); returns the final loss per response token.

    The loss is summed over response tokens and divided by a fixed count, not averaged per batch: with batches
    sorted by length, a per-batch mean would weigh a short response's tokens more and teach stopping early.
    """
    rng = random.Random(settings.seed + 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=0.0)

    def lr_factor(step: int) -> float:
        if step < settings.warmup_steps:
            return (step + 1) / settings.warmup_steps
        return 0.5 * (1 + math.cos(math.pi * (step - settings.warmup_steps) / (settings.steps - settings.warmup_steps)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    loss_scale = settings.batch_size * settings.loss_tokens_per_example
    batches = training_batches(tokenizer, settings, rng)
    model.train()
    loss_per_token = float("nan")
    progress = tqdm(range(settings.steps), desc="tiny warm start", mininterval=5)
    for _ in progress:
        examples = next(batches)
        width = max(len(ids) for ids, _ in examples)
        input_ids = torch.full((len(examples), width), tokenizer.pad_token_id)
        labels = torch.full((len(examples), width), -100)
        attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
        for row, (ids, prompt_length) in enumerate(examples):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            labels[row, prompt_length : len(ids)] = torch.tensor(ids[prompt_length:])
            attention_mask[row, : len(ids)] = 1
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
        targets = labels[:, 1:]
        loss_sum = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum")
        (loss_sum / loss_scale).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        loss_per_token = loss_sum.item() / int((targets != -100).sum())
        progress.set_postfix(loss=f"{loss_per_token:.3f}", refresh=False)
    model.eval()
    return loss_per_token


def build(out_dir: Path, settings: TinySettings) -> dict:
    """Build, warm-start and save the model and tokenizer to out_dir; returns the build report."""
    start = time.perf_counter()
    tokenizer = build_tokenizer(settings)
    model = build_model(settings, tokenizer)
    final_loss = warm_start(model, tokenizer, settings)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    report = {
        "settings": dataclasses.asdict(settings),
        "parameters": sum(p.numel() for p in model.parameters()),
        "final_loss": final_loss,
        "build_seconds": round(time.perf_counter() - start, 1),
    }
    (out_dir / "tiny_build.json").write_text(json.dumps(report, indent=2))
    return report


def tiny_model_dir(settings: TinySettings | None = None) -> Path:
    """The cached model directory for settings, built first if missing (concurrent callers build it once)."""
    from filelock import FileLock

    settings = settings or TinySettings()
    target = cache_root() / f"tiny-{settings.key()}"
    if (target / "tiny_build.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / "tiny_build.json").exists():
            logger.warning(
                "verl-thinkprune: building the tiny model into %s (once; about 3 min on 2 idle cores)", target
            )
            staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
            try:
                build(staging, settings)
                staging.rename(target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return target
