"""A rollout server that generates with Hugging Face transformers, for verl on a machine without a GPU.

verl's rollout is a server replica (vLLM, SGLang, TRT-LLM) that agent loops call ``generate`` on, plus an adapter
in each trainer worker that pushes the actor's weights to it. This is the same pair for ``rollout.name=hf``:
``HFReplica`` starts one ``HFRolloutServer`` Ray actor per replica; ``HFServerAdapter`` sends it the full state
dict on every weight update. Concurrent requests are generated together as one left-padded batch.
Knobs, under ``actor_rollout_ref.rollout.engine_kwargs.hf`` (``HFGenerator``'s arguments): ``num_threads`` (torch
threads; default torch's, from ``OMP_NUM_THREADS``, which ``+platform=cpu`` sets to 1), ``max_batch_size`` (default
256; 1 generates one request at a time), ``batch_quiet_s`` and ``batch_max_wait_s`` (when a batch starts).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import ray
import torch
from verl.utils.fs import copy_to_local
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutReplica, TokenOutput

from verl_thinkprune import generation  # the module, not its names: verl's plugin may load this file first

ROLLOUT_NAME = "hf"
BATCH_QUIET_S = 0.03
BATCH_MAX_WAIT_S = 1.0
"""A batch starts once no request has arrived for BATCH_QUIET_S, or BATCH_MAX_WAIT_S after its first request: an
agent-loop worker sends a step's requests one by one over a few hundred ms (a validation's over about a second), and
a batch of 8 decodes in about the time of a batch of 64, so a lull, not the first request, should start it."""


@dataclass(eq=False)  # compared by identity: a request is one caller's
class Request:
    prompt_ids: list[int]
    max_tokens: int
    sampling: generation.Sampling
    log_probs: bool
    done: asyncio.Future = field(repr=False)

    def batch_key(self) -> tuple[generation.Sampling, bool, int]:
        """Requests generate together only when they share sampling, log-prob and length settings."""
        return self.sampling, self.log_probs, self.max_tokens


class HFGenerator:
    """The server's generator: concurrent requests are batched into the generation core (verl_thinkprune.generation)."""

    def __init__(
        self,
        model_path: str,
        max_batch_size: int = 256,
        num_threads: int | None = None,
        batch_quiet_s: float = BATCH_QUIET_S,
        batch_max_wait_s: float = BATCH_MAX_WAIT_S,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if num_threads:
            torch.set_num_threads(num_threads)
        self.batch_quiet_s, self.batch_max_wait_s = batch_quiet_s, batch_max_wait_s
        # fp32, as the CPU backend's actor computes (see its fsdp mixed_precision in config/platform/cpu.yaml).
        self.core = generation.TransformersGenerator(model_path, dtype=torch.float32)
        self.model = self.core.model
        self.max_batch_size = max_batch_size
        self.pending: list[Request] = []
        self.last_arrival = 0.0
        self.model_lock = asyncio.Lock()
        self.draining: asyncio.Task | None = None

    async def generate(self, prompt_ids: list[int], max_tokens: int, sampling_params: dict[str, Any]) -> TokenOutput:
        """Queue one request and wait for the batch that carries it."""
        if not prompt_ids:
            raise ValueError("empty prompt")
        sampling = generation.Sampling(
            temperature=float(sampling_params.get("temperature", 1.0) or 0.0),
            top_p=float(sampling_params.get("top_p", 1.0) or 1.0),
            top_k=int(sampling_params.get("top_k", -1) or -1),
        )
        want_log_probs = bool(sampling_params.get("logprobs"))
        request = Request(
            list(prompt_ids), max_tokens, sampling, want_log_probs, asyncio.get_running_loop().create_future()
        )
        self.pending.append(request)
        self.last_arrival = time.monotonic()
        if self.draining is None or self.draining.done():
            self.draining = asyncio.create_task(self._drain())
        return await request.done

    async def _drain(self) -> None:
        """Generate queued requests, a batch of compatible ones at a time, until none are left."""
        while self.pending:
            await self._wait_for_arrivals()
            key = self.pending[0].batch_key()
            batch = [r for r in self.pending if r.batch_key() == key][: self.max_batch_size]
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

    async def _wait_for_arrivals(self) -> None:
        """Until requests stop arriving (batch_quiet_s), at most batch_max_wait_s, or a full batch is queued."""
        deadline = time.monotonic() + self.batch_max_wait_s
        while len(self.pending) < self.max_batch_size:
            wake = min(self.last_arrival + self.batch_quiet_s, deadline)
            if wake <= time.monotonic():
                return
            await asyncio.sleep(wake - time.monotonic())

    def generate_batch(self, batch: list[Request]) -> list[TokenOutput]:
        first = batch[0]
        completions = self.core.generate(
            [r.prompt_ids for r in batch], first.max_tokens, first.sampling, log_probs=first.log_probs
        )
        return [
            TokenOutput(
                token_ids=c.token_ids,
                log_probs=c.log_probs,
                stop_reason="completed" if c.finish == "eos" else "length",
            )
            for c in completions
        ]

    def load_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        missing, unexpected = self.model.load_state_dict(state_dict, strict=False)
        tied = {"lm_head.weight"} if self.model.config.tie_word_embeddings else set()
        if set(missing) - tied or unexpected:
            raise ValueError(f"weights do not fit the rollout model: missing {missing}, unexpected {unexpected}")


@ray.remote(num_cpus=0)
class HFRolloutServer:
    """The Ray actor verl's agent loops and replica talk to; its methods are the ones verl calls on vLLM's server."""

    def __init__(self, model_path: str, response_length: int, max_model_len: int, options: dict[str, Any]) -> None:
        known = set(inspect.signature(HFGenerator).parameters) - {"model_path"}
        if unknown := sorted(set(options) - known):
            raise ValueError(
                f"unknown actor_rollout_ref.rollout.engine_kwargs.hf options {unknown}; known: {sorted(known)}"
            )
        self.generator = HFGenerator(model_path, **options)
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
