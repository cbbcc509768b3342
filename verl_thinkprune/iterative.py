"""Iterative pruning: one verl run per token limit, each starting from the checkpoint selected in the last.

Every round is `python -m verl.trainer.main_ppo +reward_manager=thinkprune ...` with response length L_t. After
it, the round's checkpoint is chosen from verl's validation dumps (verl_thinkprune.selection), merged to a Hugging
Face model, and recorded in `round.json`; the next round starts from it. Re-running the same command continues an
interrupted run: recorded rounds are skipped, an unfinished round resumes from its latest checkpoint.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from hydra import compose, initialize_config_module
from omegaconf import DictConfig, OmegaConf

from verl_thinkprune import report
from verl_thinkprune.selection import read_validations, select_checkpoint

MANAGED_KEYS = (
    "data.max_response_length",
    "data.train_files",
    "data.val_files",
    "actor_rollout_ref.model.path",
    "trainer.default_local_dir",
    "trainer.validation_data_dir",
    "trainer.resume_mode",
    "trainer.val_before_train",
    "trainer.max_actor_ckpt_to_keep",
    "trainer.experiment_name",
    "hydra.run.dir",
)
"""Set by the driver for every round; a user override of one would silently break resume or selection."""

TOTAL_STEPS_LINE = "Total training steps: "


class ConfigurationError(ValueError):
    """A problem found before any training starts."""


@dataclass(frozen=True)
class Round:
    index: int
    limit: int
    directory: Path

    @property
    def checkpoints(self) -> Path:
        return self.directory / "checkpoints"

    @property
    def validations(self) -> Path:
        return self.directory / "validation"

    @property
    def merged_model(self) -> Path:
        return self.directory / "merged_model"

    @property
    def log(self) -> Path:
        return self.directory / "train.log"

    @property
    def record(self) -> Path:
        return self.directory / "round.json"


def plan_rounds(run_dir: Path, schedule: Sequence[int]) -> list[Round]:
    return [Round(t, limit, run_dir / f"round_{t}_L{limit}") for t, limit in enumerate(schedule, start=1)]


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def check_schedule(schedule: Sequence[int]) -> None:
    if not schedule or any(limit <= 0 for limit in schedule):
        raise ConfigurationError(f"the schedule must be positive token limits, got {list(schedule)}")
    if any(a <= b for a, b in zip(schedule, schedule[1:], strict=False)):
        raise ConfigurationError(f"the schedule must be strictly decreasing, got {list(schedule)}")


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


def check_overrides(overrides: Sequence[str]) -> None:
    managed = sorted({override_key(o) for o in overrides} & set(MANAGED_KEYS))
    if managed:
        raise ConfigurationError(f"{', '.join(managed)} are set by the driver for each round; use its options instead")


def check_context(model_path: str, max_prompt_length: int, schedule: Sequence[int]) -> None:
    """Each limit plus the prompt must fit the model's context window."""
    from transformers import AutoConfig

    context = getattr(AutoConfig.from_pretrained(model_path), "max_position_embeddings", None)
    if context is not None and max_prompt_length + schedule[0] > context:
        raise ConfigurationError(
            f"prompt length {max_prompt_length} + limit {schedule[0]} exceeds the model's context of {context} tokens"
        )


def claim_run_dir(run_dir: Path, fingerprint: dict) -> None:
    """Creates the run directory, or accepts it if an earlier run of the same configuration made it."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        marker = run_dir / "run_config.json"
        if marker.exists():
            previous = json.loads(marker.read_text())
            if previous != fingerprint:
                changed = sorted(
                    k for k in fingerprint.keys() | previous.keys() if fingerprint.get(k) != previous.get(k)
                )
                raise ConfigurationError(
                    f"{run_dir} holds a run with a different configuration ({', '.join(changed)} differ): "
                    "choose another RUN_DIR, or repeat the original command to continue that run"
                )
        else:
            write_json_atomically(marker, fingerprint)
    except OSError as error:
        raise ConfigurationError(f"run directory {run_dir} is not writable: {error}") from None


def write_json_atomically(path: Path, data: dict) -> None:
    """A kill -9 leaves either the old file or the new one, never half of one."""
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(partial, path)


def round_overrides(args: argparse.Namespace, rnd: Round, start_model: str, validate_first: bool) -> list[str]:
    return [
        "+reward_manager=thinkprune",
        f"data.max_response_length={rnd.limit}",
        f"data.train_files=[{','.join(map(quoted, args.train_files))}]",
        f"data.val_files=[{','.join(map(quoted, args.val_files))}]",
        f"actor_rollout_ref.model.path={quoted(start_model)}",
        f"trainer.default_local_dir={quoted(rnd.checkpoints)}",
        f"trainer.validation_data_dir={quoted(rnd.validations)}",
        "trainer.resume_mode=auto",
        f"trainer.val_before_train={validate_first}",
        "trainer.max_actor_ckpt_to_keep=null",
        f"trainer.experiment_name={args.run_dir.name}_round{rnd.index}_L{rnd.limit}",
        f"hydra.run.dir={quoted(rnd.directory / 'hydra')}",
        *args.overrides,
    ]


def quoted(value: str | Path) -> str:
    """A Hydra override value that stays one string whatever it holds (spaces, '=', brackets)."""
    return "'" + str(value).replace("'", "\\'") + "'"


def latest_checkpoint(rnd: Round) -> int:
    marker = rnd.checkpoints / "latest_checkpointed_iteration.txt"
    return int(marker.read_text().strip()) if marker.exists() else 0


def total_training_steps(rnd: Round) -> int | None:
    """verl prints the round's step count at start-up; the last run's count is in the round's log."""
    if not rnd.log.exists():
        return None
    counts = [line.split(TOTAL_STEPS_LINE)[1] for line in rnd.log.read_text().splitlines() if TOTAL_STEPS_LINE in line]
    return int(counts[-1].split()[0]) if counts else None


def training_finished(rnd: Round) -> bool:
    total = total_training_steps(rnd)
    latest = latest_checkpoint(rnd)
    return total is not None and latest >= total and latest in read_validations(rnd.validations)


def train(args: argparse.Namespace, rnd: Round, start_model: str) -> None:
    """Runs (or resumes) the round's verl training; validates first only where that step has no complete dump."""
    resume_step = latest_checkpoint(rnd)
    validate_first = resume_step not in read_validations(rnd.validations)
    python = "python3" if args.launcher else sys.executable  # a launcher runs the round on another machine
    command = [*shlex.split(args.launcher), python, "-m", "verl.trainer.main_ppo"]
    command += round_overrides(args, rnd, start_model, validate_first)
    rnd.directory.mkdir(parents=True, exist_ok=True)
    print(f"[thinkprune] round {rnd.index} (L={rnd.limit}) from {start_model}, step {resume_step}: {rnd.log}")
    env = {**os.environ, "VERL_FILE_LOGGER_PATH": str(rnd.directory / "metrics.jsonl")}  # verl's file logger
    with (
        open(rnd.log, "ab") as log,
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env) as process,
    ):
        for line in process.stdout:
            log.write(line)
            log.flush()
            if not args.quiet:
                sys.stdout.buffer.write(line)
                sys.stdout.flush()
        returncode = process.wait()
    if returncode != 0:
        raise RuntimeError(f"round {rnd.index} training failed (exit {returncode}); see {rnd.log}")


def merge(checkpoint: Path, target: Path) -> None:
    """FSDP shards to a Hugging Face model directory, with verl's own merger."""
    shutil.rmtree(target, ignore_errors=True)
    command = [sys.executable, "-m", "verl.model_merger", "merge", "--backend", "fsdp"]
    subprocess.run(command + ["--local_dir", str(checkpoint), "--target_dir", str(target)], check=True)


def finish_round(args: argparse.Namespace, rnd: Round, start_model: str) -> dict:
    """Selects the round's checkpoint, merges it and records the round (the record marks it done)."""
    validations = read_validations(rnd.validations)
    if 0 not in validations:
        raise RuntimeError(f"round {rnd.index} has no baseline validation dump (step 0) in {rnd.validations}")
    saved = sorted(int(p.name.removeprefix("global_step_")) for p in rnd.checkpoints.glob("global_step_*"))
    candidates = [validations[step] for step in saved if step in validations and step > 0]
    selection = select_checkpoint(validations[0], candidates, args.max_drop)
    output_model = start_model
    if selection.step is not None:
        merge(rnd.checkpoints / f"global_step_{selection.step}" / "actor", rnd.merged_model)
        output_model = str(rnd.merged_model)
    record = {
        "round": rnd.index,
        "limit": rnd.limit,
        "start_model": start_model,
        "baseline": asdict(validations[0]),
        "steps": [asdict(v) for v in validations.values()],
        "saved_steps": saved,
        "selection": asdict(selection),
        "output_model": output_model,
    }
    write_json_atomically(rnd.record, record)
    if args.prune_checkpoints:
        for step in saved:
            if step != selection.step:
                shutil.rmtree(rnd.checkpoints / f"global_step_{step}", ignore_errors=True)
    return record


def run(args: argparse.Namespace) -> list[dict]:
    records = []
    start_model = args.model
    for rnd in plan_rounds(args.run_dir, args.schedule):
        if rnd.record.exists():
            record = json.loads(rnd.record.read_text())
            print(f"[thinkprune] round {rnd.index} (L={rnd.limit}) already done: {record['selection']['reason']}")
        else:
            if not training_finished(rnd):
                train(args, rnd, start_model)
            record = finish_round(args, rnd, start_model)
            print(f"[thinkprune] round {rnd.index} (L={rnd.limit}): {record['selection']['reason']}")
        records.append(record)
        start_model = record["output_model"]
        report.write(args.run_dir, records)
    return records


def fingerprint(args: argparse.Namespace) -> dict:
    """What makes two runs the same run: a directory is only ever continued with the same configuration."""
    data = {os.path.abspath(p): os.path.getsize(p) for p in [*args.train_files, *args.val_files]}
    return {
        "schedule": list(args.schedule),
        "model": args.model,
        "data_files": data,
        "max_drop": args.max_drop,
        "overrides": list(args.overrides),
    }


def compose_verl_config(overrides: Sequence[str]) -> DictConfig:
    """The full config verl's main_ppo would run with these overrides (what `--cfg job` prints)."""
    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        return compose("ppo_trainer", overrides=list(overrides))


def round_configs(args: argparse.Namespace) -> list[DictConfig]:
    """Each round's composed config; a later round's start model is only known once the round before it ends."""
    starts = [args.model] + [f"<model selected in round {t}>" for t in range(1, len(args.schedule))]
    return [
        compose_verl_config(round_overrides(args, r, s, True))
        for r, s in zip(plan_rounds(args.run_dir, args.schedule), starts, strict=True)
    ]


def check_configuration(args: argparse.Namespace) -> list[DictConfig]:
    """Everything that can be checked before training: a clear message, a non-zero exit and nothing started."""
    check_schedule(args.schedule)
    if not 0 <= args.max_drop < 1:
        raise ConfigurationError(f"--max-drop must be in [0, 1), got {args.max_drop}")
    check_overrides(args.overrides)
    check_files(args.train_files, "training")
    check_files(args.val_files, "validation")
    try:
        configs = round_configs(args)
    except Exception as error:  # Hydra's own message names the bad override
        raise ConfigurationError(f"the verl config does not compose: {error}") from None
    check_context(args.model, int(configs[0].data.max_prompt_length), args.schedule)
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
    parser = argparse.ArgumentParser(
        prog="thinkprune-iterative",
        description="ThinkPrune's iterative pruning: verl rounds with a decreasing token limit.",
        epilog="Arguments after `--` are Hydra overrides passed to every round's verl.trainer.main_ppo.",
    )
    parser.add_argument("--model", required=True, help="the base model (round 1 starts from it)")
    parser.add_argument("--train-files", nargs="+", required=True)
    parser.add_argument("--val-files", nargs="+", required=True, help="selection set (paper: AIME22 + AIME23)")
    parser.add_argument("--schedule", nargs="+", type=int, default=[4000, 3000, 2000], help="token limits")
    parser.add_argument("--run-dir", type=Path, required=True, help="rounds, checkpoints and the report go here")
    parser.add_argument("--max-drop", type=float, default=0.10, help="largest relative pass@1 drop allowed")
    parser.add_argument("--prune-checkpoints", action="store_true", help="delete unselected checkpoints")
    parser.add_argument("--launcher", default="", help="command prefix for each round, e.g. 'ray job submit --'")
    parser.add_argument("--dry-run", action="store_true", help="check, print each round's verl config, and stop")
    parser.add_argument("--quiet", action="store_true", help="training output only to each round's train.log")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every round")
    args = parser.parse_args(argv)
    args.run_dir = args.run_dir.resolve()
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        configs = check_configuration(args)
        if args.dry_run:
            for rnd, config in zip(plan_rounds(args.run_dir, args.schedule), configs, strict=True):
                print(f"# round {rnd.index}: L={rnd.limit}\n{OmegaConf.to_yaml(config, resolve=True)}")
            return 0
        claim_run_dir(args.run_dir, fingerprint(args))
        with exclusive(args.run_dir):
            records = run(args)
    except ConfigurationError as error:
        print(f"thinkprune-iterative: {error}", file=sys.stderr)
        return 2
    except (RuntimeError, subprocess.CalledProcessError) as error:
        print(f"thinkprune-iterative: {error}; re-run the same command to resume", file=sys.stderr)
        return 1
    print(f"[thinkprune] done: {len(records)} rounds; report in {args.run_dir / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
