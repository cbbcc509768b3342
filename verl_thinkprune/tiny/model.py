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
    steps: int = 1200
    batch_size: int = 32
    lr: float = 3e-3
    seed: int = 0
    format_version: int = 1

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


def warm_start(model, tokenizer, settings: TinySettings) -> float:
    """Supervised fine-tuning on the task (AdamW, cosine schedule); returns the final loss per response token."""
    rng = random.Random(settings.seed + 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / settings.steps))
    )
    model.train()
    loss_value = float("nan")
    progress = tqdm(range(settings.steps), desc="tiny warm start", mininterval=5)
    for _ in progress:
        examples = [training_example(tokenizer, rng, settings.max_checks) for _ in range(settings.batch_size)]
        width = max(len(ids) for ids, _ in examples)
        input_ids = torch.full((len(examples), width), tokenizer.pad_token_id)
        labels = torch.full((len(examples), width), -100)
        attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
        for row, (ids, prompt_length) in enumerate(examples):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            labels[row, prompt_length : len(ids)] = torch.tensor(ids[prompt_length:])
            attention_mask[row, : len(ids)] = 1
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        loss_value = loss.item()
        progress.set_postfix(loss=f"{loss_value:.3f}", refresh=False)
    model.eval()
    return loss_value


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
            logger.warning("verl-thinkprune: building the tiny model into %s (once; ~5 min on 2 idle cores)", target)
            staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
            try:
                build(staging, settings)
                staging.rename(target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return target


def evaluate(model_dir: Path, num_problems: int = 128, samples: int = 4, max_new_tokens: int = 200, seed: int = 1):
    """Accuracy (the reward's rule) and mean response length when sampling at temperature 1 with no length limit."""
    from verl_thinkprune.evaluation import EvalSettings, TransformersBackend
    from verl_thinkprune.reward_manager import response_score

    settings = EvalSettings(temperature=1.0, top_p=1.0, max_new_tokens=max_new_tokens, samples=samples, seed=seed)
    backend = TransformersBackend(model_dir, settings, batch_size=num_problems * samples)
    rng = random.Random(seed)
    problems = [task.random_problem(rng) for _ in range(num_problems) for _ in range(samples)]
    prompts = [
        backend.tokenizer.apply_chat_template(
            task.messages(p), add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
        for p in problems
    ]
    completions = [completion.token_ids for completion in backend.generate(prompts, max_new_tokens)]
    correct = sum(
        response_score(backend.tokenizer.decode(ids, skip_special_tokens=True), problem.answer)
        for ids, problem in zip(completions, problems, strict=True)
    )
    lengths = [len(ids) for ids in completions]
    return {"accuracy": correct / len(completions), "mean_length": sum(lengths) / len(lengths), "lengths": lengths}
