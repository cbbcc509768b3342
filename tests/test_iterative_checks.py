"""The iterative driver's checks before training, each round's composed verl config, and the report."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest
from transformers import Qwen2Config

from verl_thinkprune import iterative, report


@pytest.fixture
def setup(tmp_path) -> dict:
    model = tmp_path / "model"
    Qwen2Config(max_position_embeddings=4096).save_pretrained(model)
    rows = pd.DataFrame({"data_source": ["x"], "prompt": [[{"role": "user", "content": "1+1?"}]]})
    rows.to_parquet(tmp_path / "train.parquet")
    rows.to_parquet(tmp_path / "val.parquet")
    return {
        "tmp": tmp_path,
        "model": str(model),
        "train": str(tmp_path / "train.parquet"),
        "val": str(tmp_path / "val.parquet"),
    }


def argv(setup: dict, *options: str, overrides=(), schedule=("3000", "2000", "1000")) -> list[str]:
    return [
        "--model", setup["model"], "--train-files", setup["train"], "--val-files", setup["val"],
        "--run-dir", str(setup["tmp"] / "run"), "--schedule", *schedule, *options, "--", *overrides,
    ]  # fmt: skip


def refusal(capsys, args: list[str]) -> str:
    assert iterative.main(args) == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("schedule", "message"),
    [(("3000", "3000"), "strictly decreasing"), (("2000", "3000"), "strictly decreasing"), (("0",), "positive")],
)
def test_bad_schedule_is_refused_before_anything_starts(setup, capsys, schedule, message):
    assert message in refusal(capsys, argv(setup, schedule=schedule))
    assert not (setup["tmp"] / "run").exists()


def test_missing_data_file_is_refused(setup, capsys):
    args = argv(setup)
    args[args.index(setup["val"])] = str(setup["tmp"] / "nope.parquet")
    err = refusal(capsys, args)
    assert "validation file" in err and "nope.parquet" in err


def test_corrupt_parquet_file_is_refused(setup, capsys):
    Path(setup["train"]).write_bytes(b"PAR1 not really parquet")
    err = refusal(capsys, argv(setup))
    assert "training file" in err and "train.parquet cannot be read" in err


def test_limit_beyond_the_model_context_is_refused(setup, capsys):
    err = refusal(capsys, argv(setup, overrides=["data.max_prompt_length=1200"], schedule=("3000",)))
    assert "prompt length 1200 + limit 3000 exceeds the model's context of 4096 tokens" in err


def test_overrides_of_driver_managed_keys_are_refused(setup, capsys):
    err = refusal(capsys, argv(setup, overrides=["trainer.max_actor_ckpt_to_keep=2", "data.max_response_length=5"]))
    assert "data.max_response_length, trainer.max_actor_ckpt_to_keep are set by the driver" in err


def test_a_typo_in_an_override_is_refused_with_hydras_message(setup, capsys):
    assert "trainer.totl_epochs" in refusal(capsys, argv(setup, overrides=["trainer.totl_epochs=3"]))


def test_run_dir_of_a_different_configuration_is_refused(setup, capsys):
    run_dir = setup["tmp"] / "run"
    iterative.claim_run_dir(run_dir, iterative.fingerprint(iterative.parse_args(argv(setup))))
    err = refusal(capsys, argv(setup, "--max-drop", "0.2"))
    assert "different configuration (max_drop differ)" in err


def test_unwritable_run_dir_is_refused(setup, capsys):
    blocker = setup["tmp"] / "file"
    blocker.write_text("")
    args = argv(setup)
    args[args.index("--run-dir") + 1] = str(blocker / "run")
    assert "not writable" in refusal(capsys, args)


def test_dry_run_prints_each_rounds_full_verl_config(setup, capsys):
    assert iterative.main(argv(setup, "--dry-run", overrides=["trainer.total_epochs=3"])) == 0
    out = capsys.readouterr().out
    assert out.count("# round ") == 3
    configs = iterative.round_configs(iterative.parse_args(argv(setup, overrides=["trainer.total_epochs=3"])))
    limits = [c.data.max_response_length for c in configs]
    assert limits == [3000, 2000, 1000] == [c.actor_rollout_ref.rollout.response_length for c in configs]
    for t, config in enumerate(configs, start=1):
        assert config.reward.reward_manager.name == "thinkprune"
        assert config.trainer.resume_mode == "auto" and config.trainer.max_actor_ckpt_to_keep is None
        assert config.trainer.validation_data_dir.endswith(f"round_{t}_L{limits[t - 1]}/validation")
        assert config.trainer.total_epochs == 3
    assert configs[0].actor_rollout_ref.model.path == setup["model"]
    assert configs[1].actor_rollout_ref.model.path == "<model selected in round 1>"
    assert not (setup["tmp"] / "run").exists(), "a dry run creates nothing"


@pytest.mark.parametrize("path", ["/data/my model=v2/", "/data/it's [new]"])
def test_paths_reach_verl_unchanged(path):
    assert (
        iterative.compose_verl_config(
            [f"actor_rollout_ref.model.path={iterative.quoted(path)}"]
        ).actor_rollout_ref.model.path
        == path
    )


def record(round_index: int, limit: int, steps: list[tuple[int, float, float]], selected: int | None) -> dict:
    validations = [
        {"step": s, "pass_at_1": p, "mean_length": m, "truncation_rate": 0.0, "num_samples": 8} for s, p, m in steps
    ]
    return {
        "round": round_index,
        "limit": limit,
        "start_model": "base",
        "baseline": validations[0],
        "steps": validations,
        "saved_steps": [s for s, _, _ in steps[1:]],
        "selection": {"step": selected, "reason": "test"},
        "output_model": f"round{round_index}",
    }


def test_report_summarises_first_to_last_change_and_plots_it(tmp_path):
    records = [
        record(1, 80, [(0, 0.8, 100.0), (10, 0.85, 70.0), (20, 0.6, 40.0)], selected=10),
        record(2, 60, [(0, 0.85, 60.0), (10, 0.8, 50.0)], selected=10),
    ]
    summary = report.write(tmp_path, records)
    assert summary["mean_length_change"] == pytest.approx(-0.5)
    assert summary["pass_at_1_change"] == pytest.approx(0.0)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["overall"] == summary and len(saved["rounds"]) == 2
    md = (tmp_path / "report.md").read_text()
    assert "100.0 -> 50.0 (-50.0%)" in md and "| 10 | 0.8500 | 70.0 | 0.000 | selected |" in md
    image = matplotlib.image.imread(tmp_path / "report.png")
    assert image.shape[0] > 100 and image.shape[1] > 100


def test_report_axes_are_labelled(tmp_path):
    figure = report.plot([record(1, 80, [(0, 0.8, 100.0), (10, 0.85, 70.0)], selected=None)], tmp_path / "p.png")
    accuracy, length = figure.axes
    assert accuracy.get_ylabel() == "validation pass@1"
    assert length.get_ylabel() == "mean response length (tokens)"
    assert length.get_xlabel().startswith("training step")
    assert Path(tmp_path / "p.png").stat().st_size > 0
