"""Iterative pruning: one verl run per token limit, each starting from the checkpoint selected in the last.

Every round is `python -m verl.trainer.main_ppo +reward_manager=thinkprune ...` with the limit L_t. After it, the
round's checkpoint is chosen from verl's validation dumps (verl_thinkprune.selection), merged to a Hugging Face
model, and recorded in `round.json`; the next round starts from it. The start model and every round's output are
evaluated the paper's way on a held-out test set (verl_thinkprune.evaluation). Re-running the same command continues
an interrupted run: recorded rounds and finished evaluations are skipped, an unfinished round resumes from its latest
checkpoint. Each step runs locally, or as a Ray job on a cluster (`--ray-address`).
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import json
import os
import shutil
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from hydra import compose, initialize_config_module
from omegaconf import DictConfig, OmegaConf

from verl_thinkprune import report
from verl_thinkprune.console import Console
from verl_thinkprune.launch import Launcher, StepFailed
from verl_thinkprune.presentation import one_line
from verl_thinkprune.protocol import RESULTS_JSON, EvalSettings
from verl_thinkprune.rounds import Round, RoundState, plan_rounds
from verl_thinkprune.rundir import RunDirectoryConflict, claim, write_json_atomically
from verl_thinkprune.selection import DEFAULT_MAX_DROP, PROTOCOLS, select_checkpoint

DEFAULT_SCHEDULE = (4000, 3000, 2000)
"""The paper's limits for R1-Distill-Qwen-1.5B."""

MANAGED_KEYS = (
    "data.max_response_length",
    "data.train_files",
    "data.val_files",
    "reward.reward_kwargs.token_limit",
    "actor_rollout_ref.model.path",
    "actor_rollout_ref.rollout.custom.thinkprune.unlimited_validation",
    "trainer.v1.trainer_mode",
    "trainer.default_local_dir",
    "trainer.validation_data_dir",
    "trainer.resume_mode",
    "trainer.val_before_train",
    "trainer.max_actor_ckpt_to_keep",
    "trainer.experiment_name",
    "hydra.run.dir",
)
"""Set by the driver for every round; a user override of one would silently break resume or selection."""

PASSED_ENVIRONMENT = ("VERL_PLATFORM", "VERL_LOGGING_LEVEL", "TOKENIZERS_PARALLELISM", "TENSORBOARD_DIR")
"""Variables of the driver's environment that every step gets, also as a Ray job (whose environment is the
cluster's): they change what the step does."""


class ConfigurationError(ValueError):
    """A problem found before any training starts."""


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def quoted(value: str | Path) -> str:
    """A Hydra override value that stays one string whatever it holds (spaces, '=', brackets)."""
    return "'" + str(value).replace("'", "\\'") + "'"


def generation_length(args: argparse.Namespace, rnd: Round) -> int:
    """The rollout's response length: L, or the validation cap when validation is generated without the limit."""
    return args.validation_max_tokens if args.selection == "unlimited" else rnd.limit


def round_overrides(args: argparse.Namespace, rnd: Round, start_model: str, validate_first: bool) -> list[str]:
    return [
        "+reward_manager=thinkprune",
        f"data.max_response_length={generation_length(args, rnd)}",
        f"reward.reward_kwargs.token_limit={rnd.limit}",
        f"actor_rollout_ref.rollout.custom.thinkprune.unlimited_validation={args.selection == 'unlimited'}",
        f"data.train_files=[{','.join(map(quoted, args.train_files))}]",
        f"data.val_files=[{','.join(map(quoted, args.val_files))}]",
        f"actor_rollout_ref.model.path={quoted(start_model)}",
        f"trainer.default_local_dir={quoted(rnd.checkpoints)}",
        f"trainer.validation_data_dir={quoted(rnd.validations)}",
        "trainer.resume_mode=auto",
        f"trainer.val_before_train={validate_first}",
        "trainer.max_actor_ckpt_to_keep=null",
        f"trainer.experiment_name={args.run_dir.name}_{rnd.name}",
        f"hydra.run.dir={quoted(rnd.directory / 'hydra')}",
        *args.overrides,
    ]


def compose_verl_config(overrides: Sequence[str]) -> DictConfig:
    """The full config verl's main_ppo would run with these overrides (what `--cfg job` prints)."""
    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        return compose("ppo_trainer", overrides=list(overrides))


def step_environment(**extra: str) -> dict[str, str]:
    return {name: os.environ[name] for name in PASSED_ENVIRONMENT if name in os.environ} | extra


class Driver:
    """Runs the steps of one iterative run in order, each through the launcher, skipping what is already done."""

    def __init__(self, args: argparse.Namespace, launcher: Launcher, console: Console) -> None:
        self.args, self.launcher, self.console = args, launcher, console
        self.rounds = plan_rounds(args.run_dir, args.schedule)

    def launch(self, module_and_args: list[str], name: str, log: Path, **env: str) -> None:
        self.launcher.run(
            ["-m", *module_and_args],
            name=name,
            env=step_environment(**env),
            log=log,
            on_line=self.console.stream,
        )

    def train(self, rnd: Round, state: RoundState, start_model: str) -> RoundState:
        """Runs (or resumes) the round's verl training from `state`; validates first only where that step has no
        complete dump. Returns the state it left."""
        resumed = f", resuming after step {state.latest_checkpoint}" if state.latest_checkpoint else ""
        self.console.say(
            f"round {rnd.index}/{len(self.rounds)}: L={rnd.limit} from {start_model}{resumed}; log {rnd.log}"
        )
        overrides = round_overrides(self.args, rnd, start_model, 0 not in state.validations)
        with self.console.round_progress(rnd, len(self.rounds)):
            self.launch(
                ["verl.trainer.main_ppo", *overrides],
                rnd.name,
                rnd.log,
                VERL_FILE_LOGGER_PATH=str(rnd.next_metrics_file()),
            )
        state = rnd.state()
        if not state.finished:
            unfinished = f"round {rnd.index} stopped before the end of its training: {state.unfinished_reason()}"
            raise StepFailed(unfinished, rnd.log)
        return state

    def finish_round(self, rnd: Round, state: RoundState, start_model: str) -> dict:
        """Selects the round's checkpoint, merges it and records the round (the record marks it done)."""
        if 0 not in state.validations:
            raise StepFailed(
                f"round {rnd.index} has no baseline validation dump (step 0) in {rnd.validations}", rnd.log
            )
        candidates = [state.validations[s] for s in state.saved_steps if s in state.validations and s > 0]
        selection = select_checkpoint(state.validations[0], candidates, self.args.max_drop, self.args.selection)
        chose = "kept the start model" if selection.step is None else f"selected step {selection.step}"
        self.console.say(f"round {rnd.index}: {chose}: {selection.reason}")
        output_model = start_model
        if selection.step is not None:
            shutil.rmtree(rnd.merged_model, ignore_errors=True)
            checkpoint = rnd.checkpoints / f"global_step_{selection.step}" / "actor"
            merge = ["verl.model_merger", "merge", "--backend", "fsdp", "--local_dir", str(checkpoint)]
            self.launch(
                [*merge, "--target_dir", str(rnd.merged_model)], f"{rnd.name}_merge", rnd.directory / "merge.log"
            )
            output_model = str(rnd.merged_model)
            self.console.say(f"round {rnd.index}: merged step {selection.step} into {output_model}")
        record = {
            "round": rnd.index,
            "limit": rnd.limit,
            "start_model": start_model,
            "baseline": dataclasses.asdict(state.validations[0]),
            "steps": [dataclasses.asdict(v) for v in state.validations.values()],
            "saved_steps": state.saved_steps,
            "selection": dataclasses.asdict(selection),
            "output_model": output_model,
        }
        write_json_atomically(rnd.record, record)
        if self.args.prune_checkpoints:
            for step in state.saved_steps:
                if step != selection.step:
                    shutil.rmtree(rnd.checkpoints / f"global_step_{step}", ignore_errors=True)
        return record

    def evaluate(self, label: str, model: str, limit: int | None) -> dict:
        """The paper's measurement of one model on the held-out test set (resumes an interrupted evaluation)."""
        settings = evaluation_settings(self.args)
        out_dir = self.args.run_dir / "evaluation" / label.replace(" ", "_")
        results = out_dir / RESULTS_JSON
        if not results.exists():
            log = out_dir / "evaluate.log"
            self.console.say(f"evaluating the {label} on the test set ({settings.describe()}); log {log}")
            command = ["verl_thinkprune.evaluation", "--model", model, "--data", *self.args.test_files]
            command += ["--out-dir", str(out_dir), "--backend", self.args.eval_backend]
            command += ["--max-new-tokens", str(settings.max_new_tokens)]
            command += ["--samples", str(settings.samples)] if settings.samples else []
            self.launch(command, f"evaluate_{out_dir.name}", log)
        overall = json.loads(results.read_text())["results"]["overall"]
        self.console.say(
            f"{label}: pass@1 {overall['pass@1']:.1%}, mean length {overall['mean_length']:.1f}, "
            f"truncated {overall['truncation_rate']:.1%} (held-out test set)"
        )
        return {"label": label, "model": model, "limit": limit, "directory": str(out_dir), **overall}

    def run(self) -> dict:
        """Every round and evaluation not done yet, in order; the report is rewritten after each."""
        records: list[dict] = []
        evaluations: list[dict] = []
        by_model: dict[str, dict] = {}
        settings = evaluation_settings(self.args) if self.args.test_files else None

        def evaluated(label: str, model: str, limit: int | None) -> dict:
            """Measures model (unless measured already) and rewrites the report; returns the report."""
            if settings is not None:
                if model not in by_model:  # a round that kept its start model hands on a model measured already
                    by_model[model] = self.evaluate(label, model, limit)
                evaluations.append({**by_model[model], "label": label, "limit": limit})
            return report.write(self.args.run_dir, records, evaluations, settings)

        summary = evaluated("start model", self.args.model, None)
        start_model = self.args.model
        for rnd in self.rounds:
            if rnd.record.exists():
                record = json.loads(rnd.record.read_text())
                self.console.say(f"round {rnd.index} (L={rnd.limit}) already done: {record['selection']['reason']}")
            else:
                state = rnd.state()
                if not state.finished:
                    state = self.train(rnd, state, start_model)
                record = self.finish_round(rnd, state, start_model)
            records.append(record)
            start_model = record["output_model"]
            summary = evaluated(f"round {rnd.index} output", start_model, rnd.limit)
        return summary  # the last round's report is the final one: written once


def evaluation_settings(args: argparse.Namespace) -> EvalSettings:
    return EvalSettings(samples=args.eval_samples, max_new_tokens=args.eval_max_new_tokens)


def resolve(path: str) -> str:
    """Absolute, so that a step run elsewhere (a Ray job runs in the head node's working directory) finds it."""
    return os.path.abspath(os.path.expanduser(path))


def is_local(model: str) -> bool:
    """A directory here (or a path-like name), rather than a Hugging Face hub id such as org/name."""
    return os.path.exists(os.path.expanduser(model)) or model.startswith((".", "/", "~")) or model.count("/") > 1


def fingerprint(args: argparse.Namespace) -> dict:
    """What makes two runs the same run: a directory is only ever continued with the same configuration."""
    files = [*args.train_files, *args.val_files, *args.test_files]
    return {
        "schedule": list(args.schedule),
        "model": os.path.realpath(args.model) if is_local(args.model) else args.model,
        "data_files": {path: os.path.getsize(path) for path in files},
        "max_drop": args.max_drop,
        "selection": args.selection,
        "validation_max_tokens": args.validation_max_tokens if args.selection == "unlimited" else None,
        "evaluation": dataclasses.asdict(evaluation_settings(args)) if args.test_files else None,
        "overrides": list(args.overrides),
    }


def round_configs(args: argparse.Namespace) -> list[DictConfig]:
    """Each round's composed config; a later round's start model is only known once the round before it ends."""
    starts = [args.model] + [f"<model selected in round {t}>" for t in range(1, len(args.schedule))]
    return [
        compose_verl_config(round_overrides(args, r, s, True))
        for r, s in zip(plan_rounds(args.run_dir, args.schedule), starts, strict=True)
    ]


def check_files(paths: Sequence[str], what: str) -> None:
    """Each file opens, and a parquet file has a readable footer (verl reads them only after Ray has started)."""
    import pyarrow.parquet

    for path in paths:
        try:
            if path.endswith(".parquet"):
                pyarrow.parquet.read_metadata(path)
            else:
                with open(path, "rb") as file:
                    file.read(1)
        except (OSError, pyarrow.ArrowException) as error:
            raise ConfigurationError(f"{what} file {path} cannot be read: {error}") from None


def check_test_set_is_held_out(test_files: Sequence[str], val_files: Sequence[str]) -> None:
    """The test set measures the selected model: a problem it shares with the selection set would flatter it."""
    import pandas as pd

    def problems(paths: Sequence[str]) -> set[str]:
        prompts = [pd.read_parquet(path, columns=["prompt"])["prompt"] for path in paths if path.endswith(".parquet")]
        return {str(list(messages)[-1]["content"]) for column in prompts for messages in column}

    if shared := problems(test_files) & problems(val_files):
        raise ConfigurationError(
            f"the test files share {len(shared)} problem(s) with the validation (selection) files, e.g. "
            f"{next(iter(shared))[:80]!r}: evaluate on held-out problems"
        )


def check_model(args: argparse.Namespace, configs: list[DictConfig]) -> None:
    """The model's config loads, and each length plus the prompt fits its context window."""
    from transformers import AutoConfig

    try:
        context = getattr(AutoConfig.from_pretrained(args.model), "max_position_embeddings", None)
    except Exception as error:  # a hub name that does not resolve, a broken config.json, ...
        raise ConfigurationError(f"--model {args.model}: its config cannot be loaded ({error})") from None
    prompt = int(configs[0].data.max_prompt_length)
    lengths = {"training": int(configs[0].data.max_response_length)}
    if args.test_files:
        lengths["evaluation"] = evaluation_settings(args).max_new_tokens
    for what, length in lengths.items():
        if context is not None and prompt + length > context:
            raise ConfigurationError(
                f"prompt length {prompt} + {what} length {length} exceeds the model's context of {context} tokens"
            )


def check_configuration(args: argparse.Namespace) -> list[DictConfig]:
    """Everything that can be checked before training: a clear message, a non-zero exit and nothing started."""
    schedule = args.schedule
    if not schedule or any(limit <= 0 for limit in schedule):
        raise ConfigurationError(f"the schedule must be positive token limits, got {list(schedule)}")
    if any(a <= b for a, b in zip(schedule, schedule[1:], strict=False)):
        raise ConfigurationError(f"the schedule must be strictly decreasing, got {list(schedule)}")
    if not 0 <= args.max_drop < 1:
        raise ConfigurationError(f"--max-drop must be in [0, 1), got {args.max_drop}")
    if args.selection == "unlimited" and args.validation_max_tokens <= schedule[0]:
        raise ConfigurationError(
            f"--validation-max-tokens {args.validation_max_tokens} must exceed the first limit {schedule[0]}: "
            "unlimited validation generates past the limit"
        )
    if args.test_files and evaluation_settings(args).max_new_tokens <= schedule[0]:
        raise ConfigurationError(
            f"--eval-max-new-tokens must exceed the first limit {schedule[0]}: the paper measures without an "
            "effective limit"
        )
    if managed := sorted({override_key(o) for o in args.overrides} & set(MANAGED_KEYS)):
        raise ConfigurationError(f"{', '.join(managed)} are set by the driver for each round; use its options instead")
    check_files(args.train_files, "training")
    check_files(args.val_files, "validation")
    check_files(args.test_files, "test")
    check_test_set_is_held_out(args.test_files, args.val_files)
    if is_local(args.model) and not os.path.isdir(args.model):
        raise ConfigurationError(f"--model {args.model}: no such model directory")
    try:
        configs = round_configs(args)
    except Exception as error:  # Hydra's own message names the bad override
        raise ConfigurationError(f"the verl config does not compose: {error}") from None
    trainer = configs[0].trainer
    if trainer.save_freq <= 0 or trainer.test_freq <= 0:
        raise ConfigurationError("trainer.save_freq and trainer.test_freq must be positive: selection needs both")
    check_model(args, configs)
    return configs


@contextmanager
def exclusive(run_dir: Path) -> Iterator[None]:
    """One driver per run directory: a second one would train the same round twice into the same files."""
    with open(run_dir / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigurationError(f"another thinkprune-iterative is running in {run_dir}") from None
        yield


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    protocol = EvalSettings()
    parser = argparse.ArgumentParser(
        prog="thinkprune-iterative",
        description="ThinkPrune's iterative pruning: verl rounds with a decreasing token limit, each from the last "
        "round's selected checkpoint, with the start model and every round's output evaluated on a held-out test set.",
        epilog="Arguments after `--` are Hydra overrides passed to every round's verl.trainer.main_ppo.",
    )
    parser.add_argument("--model", required=True, help="the base model (round 1 starts from it)")
    parser.add_argument("--train-files", nargs="+", required=True)
    parser.add_argument("--val-files", nargs="+", required=True, help="selection set (paper: AIME22 + AIME23)")
    parser.add_argument("--run-dir", type=Path, required=True, help="rounds, checkpoints and the report go here")
    parser.add_argument("--schedule", nargs="+", type=int, default=list(DEFAULT_SCHEDULE), help="token limits")
    parser.add_argument("--max-drop", type=float, default=DEFAULT_MAX_DROP, help="largest relative pass@1 drop")
    parser.add_argument(
        "--selection",
        choices=PROTOCOLS,
        default="paper",
        help="paper: validation under each round's limit (the paper's rule); unlimited: validation generated up to "
        "--validation-max-tokens, so a truncated baseline cannot hide an accuracy loss",
    )
    parser.add_argument("--validation-max-tokens", type=int, help="unlimited selection (default: 2 x the first limit)")
    evaluation = parser.add_argument_group("evaluation (the paper's protocol: T=0.6, top_p=0.95)")
    evaluation.add_argument("--test-files", nargs="+", default=[], help="held-out test set (verl parquet files)")
    evaluation.add_argument("--no-evaluation", action="store_true", help="skip evaluation (no --test-files needed)")
    evaluation.add_argument("--eval-samples", type=int, help="samples per problem (default: the paper's per benchmark)")
    evaluation.add_argument("--eval-max-new-tokens", type=int, default=protocol.max_new_tokens)
    evaluation.add_argument("--eval-backend", choices=["vllm", "transformers"], default="vllm")
    parser.add_argument("--prune-checkpoints", action="store_true", help="delete unselected checkpoints")
    parser.add_argument("--ray-address", help="run every step as a Ray job on this cluster (its dashboard address)")
    parser.add_argument("--runtime-env", type=Path, help="Ray runtime env YAML for the jobs (recipes/runtime_env.yaml)")
    parser.add_argument("--dry-run", action="store_true", help="check, print each round's verl config, and stop")
    parser.add_argument("--verbose", action="store_true", help="stream every step's output (always in its log)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every round")
    args = parser.parse_args(argv)
    if not args.test_files and not args.no_evaluation:
        parser.error("--test-files are required (a held-out test set for the evaluation), or --no-evaluation")
    if args.no_evaluation:
        args.test_files = []
    args.validation_max_tokens = args.validation_max_tokens or 2 * max(args.schedule or [0])
    args.run_dir = args.run_dir.resolve()
    args.train_files, args.val_files, args.test_files = (
        [resolve(p) for p in files] for files in (args.train_files, args.val_files, args.test_files)
    )
    if is_local(args.model):
        args.model = resolve(args.model)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(args.verbose)
    if not args.verbose:  # import-time notices of verl (its optional engines), Ray, ...: not for the console
        warnings.filterwarnings("ignore")
    try:
        configs = check_configuration(args)
        claim(args.run_dir, fingerprint(args), "thinkprune-iterative run", create=not args.dry_run)
        if args.dry_run:
            for rnd, config in zip(plan_rounds(args.run_dir, args.schedule), configs, strict=True):
                print(f"# round {rnd.index}: L={rnd.limit}\n{OmegaConf.to_yaml(config, resolve=True)}")
            return 0
        with exclusive(args.run_dir):
            launcher = Launcher(args.run_dir, args.ray_address, args.runtime_env)
            summary = Driver(args, launcher, console).run()
    except (ConfigurationError, RunDirectoryConflict) as error:
        print(f"thinkprune-iterative: {one_line(error)}", file=sys.stderr)
        return 2
    except StepFailed as error:
        console.failure(error.log)
        print(
            f"thinkprune-iterative: {one_line(error)}; fix the cause and re-run the same command to resume",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print("thinkprune-iterative: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    console.say(f"done: {summary['headline']}")
    console.say(f"report: {args.run_dir / 'report.md'} and report.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
