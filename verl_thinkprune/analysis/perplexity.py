"""Readability of the reasoning: its perplexity under a reference model (the paper compares pruned to original)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from verl_thinkprune.analysis import AnalysisError, one_line
from verl_thinkprune.budget_forcing import THINK_END
from verl_thinkprune.presentation import markdown_table


def reasoning_part(response: str) -> str:
    """The text before ``</think>``: the whole response when the thinking never closed (cut off)."""
    return response.split(THINK_END, 1)[0]


class ReferenceModel:
    """A causal LM that scores text given the prompt it answered: a local model directory or a hub model id."""

    def __init__(self, model: str | Path, device: str = "cpu"):
        from huggingface_hub.utils import HFValidationError, validate_repo_id
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not Path(model).exists():
            try:
                validate_repo_id(str(model))
            except HFValidationError:  # a path, not a hub id: transformers would only say the id is malformed
                raise AnalysisError(f"no reference model directory at {model}") from None
        try:
            self.model = AutoModelForCausalLM.from_pretrained(model, dtype="auto").to(device).eval()
            self.tokenizer = AutoTokenizer.from_pretrained(model)  # after the model: its error names what is missing
        except (OSError, ValueError) as error:
            raise AnalysisError(f"cannot load the reference model {model}: {one_line(error)}") from error
        self.device = device
        self.max_positions = getattr(self.model.config, "max_position_embeddings", None)

    def negative_log_likelihood(self, messages: list[dict[str, str]], text: str) -> tuple[float, int]:
        """Summed NLL of text's tokens after the chat-formatted prompt, and how many tokens were scored."""
        import torch

        prompt = list(
            self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)[
                "input_ids"
            ]
        )
        ids = (prompt + self.tokenizer.encode(text, add_special_tokens=False))[: self.max_positions]
        if len(ids) <= len(prompt):
            return 0.0, 0
        with torch.no_grad():
            logits = self.model(input_ids=torch.tensor([ids], device=self.device)).logits[0, :-1].float()
        targets = torch.tensor(ids[1:], device=self.device)
        nll = torch.nn.functional.cross_entropy(logits, targets, reduction="none")[len(prompt) - 1 :]
        return float(nll.sum()), int(nll.numel())


def reasoning_perplexity(
    reference: ReferenceModel, records: Iterable[dict[str, Any]], max_responses: int | None = None
) -> dict[str, float]:
    """exp(mean token NLL) of the reasoning over a run's responses, with how many tokens and responses it covers."""
    total, tokens, responses = 0.0, 0, 0
    for record in records:
        for response in record["responses"]:
            if max_responses is not None and responses >= max_responses:
                break
            nll, count = reference.negative_log_likelihood(record["prompt"], reasoning_part(response))
            total, tokens, responses = total + nll, tokens + count, responses + 1
    value = math.exp(total / tokens) if tokens else float("nan")
    return {"perplexity": value, "tokens": tokens, "responses": responses}


def perplexity_table(report: dict[str, dict[str, float]]) -> str:
    """A markdown table: one row per run."""
    rows = [[label, f"{row['perplexity']:.3f}", row["tokens"], row["responses"]] for label, row in report.items()]
    return markdown_table(["run", "reasoning perplexity", "tokens", "responses"], rows)
