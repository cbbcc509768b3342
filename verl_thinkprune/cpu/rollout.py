"""A rollout server that generates with Hugging Face transformers, for verl on a machine without a GPU.

verl's rollout is a server replica (vLLM, SGLang, TRT-LLM) that agent loops call ``generate`` on, plus an adapter
in each trainer worker that pushes the actor's weights to it. This is the same pair for ``rollout.name=hf``:
``HFReplica`` starts one ``HFRolloutServer`` Ray actor per replica; ``HFServerAdapter`` sends it the full state
dict on every weight update. Concurrent requests are generated together as one left-padded batch.
Knobs, under ``actor_rollout_ref.rollout.engine_kwargs.hf``: ``num_threads`` (torch threads, default all cores)
and ``max_batch_size`` (default 256; 1 generates one request at a time).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import ray
import torch
from verl.utils.fs import copy_to_local
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutReplica, TokenOutput

logger = logging.getLogger(__name__)

ROLLOUT_NAME = "hf"
BATCH_WINDOW_S = 0.005
"""How long the first request of a batch waits for the others the agent loops send at about the same time."""


@dataclass
class Request:
    prompt_ids: list[int]
    max_tokens: int
    sampling: tuple[float, float, int, bool]  # temperature, top_p, top_k, logprobs: one batch shares these
    done: asyncio.Future = field(repr=False)


class HFGenerator:
    """Batched sampling with a Hugging Face causal LM: requests that arrive together are generated together."""

    def __init__(self, model_path: str, max_batch_size: int = 256, num_threads: int | None = None) -> None:
        from transformers import AutoModelForCausalLM

        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        torch.set_num_threads(num_threads or os.cpu_count() or 1)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
        generation_config = self.model.generation_config
        eos = generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
        if not self.eos_ids:
            raise ValueError(f"{model_path}: the generation config names no eos_token_id; generation would never stop")
        pad = generation_config.pad_token_id
        self.pad_id = pad if pad is not None else min(self.eos_ids)
        self.max_batch_size = max_batch_size
        self.pending: list[Request] = []
        self.model_lock = asyncio.Lock()
        self.draining: asyncio.Task | None = None

    async def generate(self, prompt_ids: list[int], max_tokens: int, sampling_params: dict[str, Any]) -> TokenOutput:
        """Queue one request and wait for the batch that carries it."""
        if not prompt_ids:
            raise ValueError("empty prompt")
        sampling = (
            float(sampling_params.get("temperature", 1.0) or 0.0),
            float(sampling_params.get("top_p", 1.0) or 1.0),
            int(sampling_params.get("top_k", -1) or -1),
            bool(sampling_params.get("logprobs")),
        )
        request = Request(list(prompt_ids), max_tokens, sampling, asyncio.get_running_loop().create_future())
        self.pending.append(request)
        if self.draining is None or self.draining.done():
            self.draining = asyncio.create_task(self._drain())
        return await request.done

    async def _drain(self) -> None:
        """Generate queued requests, a batch of compatible ones at a time, until none are left."""
        await asyncio.sleep(BATCH_WINDOW_S)
        while self.pending:
            first = self.pending[0]
            batch = [r for r in self.pending if (r.sampling, r.max_tokens) == (first.sampling, first.max_tokens)]
            batch = batch[: self.max_batch_size]
            self.pending = [r for r in self.pending if r not in batch]
            try:
                async with self.model_lock:
                    outputs = await asyncio.to_thread(self.generate_batch, batch)
            except Exception as error:  # the callers get the error; the server keeps serving
                for request in batch:
                    request.done.set_exception(error)
                continue
            for request, output in zip(batch, outputs, strict=True):
                request.done.set_result(output)

    @torch.no_grad()
    def generate_batch(self, batch: list[Request]) -> list[TokenOutput]:
        temperature, top_p, top_k, want_logprobs = batch[0].sampling
        width = max(len(r.prompt_ids) for r in batch)
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for row, request in enumerate(batch):
            input_ids[row, width - len(request.prompt_ids) :] = torch.tensor(request.prompt_ids)
            attention_mask[row, width - len(request.prompt_ids) :] = 1
        sampling = {"do_sample": False}
        if temperature > 0:
            sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": max(top_k, 0)}
        output = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=batch[0].max_tokens,
            eos_token_id=sorted(self.eos_ids),
            pad_token_id=self.pad_id,
            return_dict_in_generate=True,
            output_logits=want_logprobs,
            **sampling,
        )
        new_tokens = output.sequences[:, width:]
        log_probs = None
        if want_logprobs:  # of the sampling distribution before top-p/top-k, as verl's actor computes them
            logits = torch.stack(output.logits, dim=1).float() / (temperature if temperature > 0 else 1.0)
            log_probs = torch.log_softmax(logits, dim=-1).gather(-1, new_tokens.unsqueeze(-1)).squeeze(-1)
        results = []
        for row in range(len(batch)):
            token_ids = new_tokens[row].tolist()
            end = next((i + 1 for i, token in enumerate(token_ids) if token in self.eos_ids), len(token_ids))
            results.append(
                TokenOutput(
                    token_ids=token_ids[:end],
                    log_probs=log_probs[row, :end].tolist() if log_probs is not None else None,
                    stop_reason="completed" if token_ids[end - 1] in self.eos_ids else "length",
                )
            )
        return results

    def load_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        missing, unexpected = self.model.load_state_dict(state_dict, strict=False)
        tied = {"lm_head.weight"} if self.model.config.tie_word_embeddings else set()
        if set(missing) - tied or unexpected:
            raise ValueError(f"weights do not fit the rollout model: missing {missing}, unexpected {unexpected}")


@ray.remote(num_cpus=0)
class HFRolloutServer:
    """The Ray actor verl's agent loops and replica talk to; its methods are the ones verl calls on vLLM's server."""

    def __init__(self, model_path: str, response_length: int, max_model_len: int, options: dict[str, Any]) -> None:
        options = dict(options)
        self.generator = HFGenerator(model_path, options.pop("max_batch_size", 256), options.pop("num_threads", None))
        if options:
            raise ValueError(f"unknown actor_rollout_ref.rollout.engine_kwargs.hf options: {sorted(options)}")
        self.response_length = response_length
        self.max_model_len = max_model_len
        self.global_steps: int | None = None

    async def generate(self, request_id: str, prompt_ids: list[int], sampling_params: dict[str, Any], **kwargs):
        """Token in, tokens out; max_tokens is capped by response_length and the context left, as vLLM's server does."""
        for unsupported in ("image_data", "video_data", "audio_data"):
            if kwargs.get(unsupported) is not None:
                raise ValueError(f"the hf rollout is text-only: got {unsupported}")
        room = self.max_model_len - len(prompt_ids)
        if room < 1:
            raise ValueError(f"prompt of {len(prompt_ids)} tokens leaves no room within {self.max_model_len}")
        requested = sampling_params.get("max_tokens", sampling_params.get("max_new_tokens"))
        max_tokens = min(int(requested or self.response_length), self.response_length, room)
        output = await self.generator.generate(prompt_ids, max(1, max_tokens), sampling_params)
        output.extra_fields = {"global_steps": self.global_steps}
        return output

    async def load_weights(self, state_dict: dict[str, torch.Tensor], global_steps: int | None) -> None:
        async with self.generator.model_lock:
            self.generator.load_state_dict(state_dict)
        self.global_steps = global_steps

    async def ready(self) -> bool:
        return True

    async def _nothing_to_do(self, *args, **kwargs) -> None:
        """Memory and profiling controls of GPU engines: weights stay in place here and there is no KV cache."""

    wake_up = sleep = clear_kv_cache = release_kv_cache = resume_kv_cache = _nothing_to_do
    resume_generation = abort_all_requests = start_profile = stop_profile = _nothing_to_do


def server_name(replica_rank: int) -> str:
    return f"verl_thinkprune_hf_rollout_{replica_rank}"


class HFReplica(RolloutReplica):
    """One HF generation server per replica (tensor/data/pipeline parallel size 1)."""

    async def launch_servers(self) -> None:
        if self.world_size != 1:
            raise ValueError(
                f"the hf rollout runs unsharded: rollout tensor/data/pipeline sizes must be 1 ({self.world_size})"
            )
        config = self.config
        options = dict(config.engine_kwargs.get(ROLLOUT_NAME) or {})
        name = server_name(self.replica_rank) + self.name_suffix
        server = HFRolloutServer.options(name=name, max_concurrency=self.max_concurrency).remote(
            copy_to_local(self.model_config.path),
            config.response_length,
            config.max_model_len or config.prompt_length + config.response_length,
            options,
        )
        await server.ready.remote()
        self.servers = [server]
        self._server_handle = server
        self._server_address = f"ray-actor://{name}"


class HFServerAdapter(BaseRollout):
    """Lives in each trainer worker: forwards the actor's weights to its replica's server after every update."""

    def __init__(self, config, model_config, device_mesh, *args, replica_rank: int = -1, **kwargs) -> None:
        super().__init__(config, model_config, device_mesh)
        rank = int(os.environ.get("RANK", "0"))
        self.replica_rank = rank if replica_rank == -1 else replica_rank  # one rank per replica (world size 1)

    async def resume(self, tags: list[str]) -> None:
        """Weights and cache never leave memory."""

    async def release(self) -> None:
        """Weights and cache never leave memory."""

    async def update_weights(
        self, weights: Iterable[tuple[str, torch.Tensor]], wire_format: str = "named_tensors", **kwargs
    ) -> None:
        if wire_format != "named_tensors":
            raise ValueError(f"the hf rollout takes wire_format='named_tensors', got {wire_format!r}")
        state_dict = {name: tensor.detach().to("cpu", dtype=torch.float32, copy=True) for name, tensor in weights}
        server = ray.get_actor(server_name(self.replica_rank))
        await server.load_weights.remote(state_dict, kwargs.get("global_steps"))
