"""One Hugging Face generation core: the CPU rollout server and the transformers evaluation backend both sample here.

Batched sampling with ``model.generate``: prompts are left-padded by the tokenizer, each row is cut after its first
EOS token (kept, as servers keep it) or after the end of a stop string, and each comes back with how it ended
(``Finish``): a caller never guesses truncation from padding. Pad and EOS ids are picked in one place
(``special_ids``), with the EOS ids the reward manager counts as finished (``reward_manager.eos_token_ids``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from verl_thinkprune.reward_manager import eos_token_ids

Finish = Literal["eos", "stop", "length"]
"""How a completion ended: an EOS token, a stop string, or the new-token budget used up (truncated)."""


@dataclass(frozen=True)
class Sampling:
    """Sampling settings of one generate call (a batch shares them)."""

    temperature: float = 1.0
    """0: greedy."""
    top_p: float = 1.0
    top_k: int = 0
    """0: off (vLLM's -1 means the same)."""

    def generate_kwargs(self) -> dict[str, Any]:
        if self.temperature <= 0:
            return {"do_sample": False}
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "top_k": max(self.top_k, 0)}


@dataclass(frozen=True)
class Completion:
    token_ids: list[int]
    """The new tokens, up to and including the first EOS, or up to the end of the stop string."""
    finish: Finish
    log_probs: list[float] | None = None
    """Per token, under the sampling temperature before top-p/top-k (as verl's actor computes them); when asked."""


def special_ids(tokenizer: Any, model_path: str | Path) -> tuple[int, frozenset[int]]:
    """The pad id and the EOS ids: EOS ids of the tokenizer and the generation config; pad: the tokenizer's, else
    the smallest EOS id (padding never reaches a completion, see ``cut_completion``)."""
    eos_ids = eos_token_ids(tokenizer, str(model_path))
    if not eos_ids:
        raise ValueError(f"{model_path}: neither the tokenizer nor the generation config names an EOS token")
    pad_id = tokenizer.pad_token_id
    return (min(eos_ids) if pad_id is None else pad_id), eos_ids


def cut_completion(
    ids: Sequence[int], eos_ids: Collection[int], stop: str | None = None, tokenizer: Any = None
) -> tuple[list[int], Finish | None]:
    """A generated row up to its first EOS (kept) or the end of the first stop string, and which one ended it
    (None: neither, the engine stopped it). Padding after the end, and tokens an engine sampled past a stop
    string, are dropped. The stop string is searched before the EOS: padding may reuse the EOS id."""
    end = next((i + 1 for i, token in enumerate(ids) if token in eos_ids), None)
    ids = list(ids if end is None else ids[:end])
    if stop and stop in tokenizer.decode(ids, skip_special_tokens=False):
        low, high = 1, len(ids)  # the shortest prefix that holds the stop string
        while low < high:
            middle = (low + high) // 2
            if stop in tokenizer.decode(ids[:middle], skip_special_tokens=False):
                high = middle
            else:
                low = middle + 1
        return ids[:low], "stop"
    return ids, None if end is None else "eos"


class TransformersGenerator:
    """A causal LM and its tokenizer, sampling batches of token-id prompts."""

    def __init__(self, model_path: str | Path, device: str = "cpu", dtype: str | torch.dtype = "auto") -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(device).eval()
        self.pad_id, self.eos_ids = special_ids(self.tokenizer, model_path)
        if self.tokenizer.pad_token_id is None:  # tokenizer.pad needs one; this tokenizer serves this generator only
            self.tokenizer.pad_token = self.tokenizer.convert_ids_to_tokens(self.pad_id)

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int,
        sampling: Sampling,
        stop: str | None = None,
        log_probs: bool = False,
    ) -> list[Completion]:
        """One ``model.generate`` call for all prompts (callers choose the batch size)."""
        batch = self.tokenizer.pad(
            {"input_ids": [list(p) for p in prompts]}, padding=True, padding_side="left", return_tensors="pt"
        ).to(self.model.device)
        output = self.model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            eos_token_id=sorted(self.eos_ids),
            pad_token_id=self.pad_id,
            return_dict_in_generate=True,
            output_logits=log_probs,
            **({"stop_strings": [stop], "tokenizer": self.tokenizer} if stop else {}),
            **sampling.generate_kwargs(),
        )
        new_tokens = output.sequences[:, batch["input_ids"].shape[1] :]
        token_log_probs = None
        if log_probs:
            logits = torch.stack(output.logits, dim=1).float() / (sampling.temperature or 1.0)
            token_log_probs = torch.log_softmax(logits, dim=-1).gather(-1, new_tokens.unsqueeze(-1)).squeeze(-1)
        completions = []
        for row, ids in enumerate(new_tokens.tolist()):
            kept, finish = cut_completion(ids, self.eos_ids, stop, self.tokenizer)
            completions.append(
                Completion(
                    token_ids=kept,
                    finish=finish or "length",
                    log_probs=token_log_probs[row, : len(kept)].tolist() if token_log_probs is not None else None,
                )
            )
        return completions
