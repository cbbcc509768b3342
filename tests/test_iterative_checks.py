"""The iterative driver's checks before training, each round's composed verl config, and the report."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest
from transformers import Qwen2Config

from verl_thinkprune import iterative, report
from verl_thinkprune.evaluation import EvalSettings


@pytest.fixture
def setup(tmp_path) -> dict:
    model = tmp_path / "model"
    Qwen2Config(max_position_embeddings=4096).save_pretrained(model)
    files = {}
    for name, problem in (("train", "1+1?"), ("val", "2+2?"), ("test", "3+3?")):
        rows = pd.DataFrame({"data_source": ["x"], "prompt": [[{"role": "user", "content": problem}]]})
        rows.to_parquet(tmp_path / f"{name}.parquet")
        files[name] = str(tmp_path / f"{name}.parquet")
    return {"tmp": tmp_path, "model": str(model), **files}


def argv(setup: dict, *options: str, overrides=(), schedule=("3000", "2000", "1000")) -> list[str]:
    return [
        "--model", setup["model"], "--train-files", setup["train"], "--val-files", setup["val"],
        "--test-files", setup["test"], "--eval-max-new-tokens", "3072",
        "--run-dir", str(setup["tmp"] / "run"), "--schedule", *schedule, *options,
        "--", "trainer.save_freq=10", "trainer.test_freq=10", *overrides,
    ]  # fmt: skip


def refusal(capsys, args: list[str]) -> str:
    assert iterative.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, "one line"
    return err


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


@pytest.mark.parametrize("model", ["missing_dir", "./missing_dir", "no-such-org/no-such-model-here"])
def test_a_model_that_does_not_exist_is_refused_as_configuration(setup, capsys, model, monkeypatch):
    monkeypatch.chdir(setup["tmp"])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a hub name is looked up in the local cache only, here
    args = argv(setup)
    args[args.index(setup["model"])] = model
    assert model.removeprefix("./") in refusal(capsys, args)


def test_limit_beyond_the_model_context_is_refused(setup, capsys):
    err = refusal(capsys, argv(setup, overrides=["data.max_prompt_length=1200"], schedule=("3000",)))
    assert "prompt length 1200 + training length 3000 exceeds the model's context of 4096 tokens" in err


def test_evaluation_under_an_effective_limit_is_refused(setup, capsys):
    args = argv(setup)
    args[args.index("--eval-max-new-tokens") + 1] = "3000"
    assert "--eval-max-new-tokens must exceed the first limit 3000" in refusal(capsys, args)


def test_evaluation_needs_test_files_or_an_explicit_off_switch(setup, capsys):
    args = argv(setup)
    del args[args.index("--test-files") : args.index("--test-files") + 2]
    with pytest.raises(SystemExit) as exit_info:
        iterative.parse_args(args)
    assert exit_info.value.code == 2 and "--test-files are required" in capsys.readouterr().err
    assert iterative.parse_args([*args[: args.index("--")], "--no-evaluation"]).test_files == []


def test_overrides_of_driver_managed_keys_are_refused(setup, capsys):
    err = refusal(capsys, argv(setup, overrides=["trainer.max_actor_ckpt_to_keep=2", "data.max_response_length=5"]))
    assert "data.max_response_length, trainer.max_actor_ckpt_to_keep are set by the driver" in err


def test_selection_without_saves_or_validations_is_refused(setup, capsys):
    assert "save_freq and trainer.test_freq must be positive" in refusal(
        capsys, argv(setup, overrides=["trainer.save_freq=0"])
    )


def test_a_typo_in_an_override_is_refused_with_hydras_message(setup, capsys):
    assert "trainer.totl_epochs" in refusal(capsys, argv(setup, overrides=["trainer.totl_epochs=3"]))


def test_run_dir_of_a_different_configuration_is_refused(setup, capsys):
    from verl_thinkprune.rundir import claim

    run_dir = setup["tmp"] / "run"
    claim(run_dir, iterative.fingerprint(iterative.parse_args(argv(setup))), "thinkprune-iterative run")
    err = refusal(capsys, argv(setup, "--max-drop", "0.2", "--dry-run"))
    assert "other settings (max_drop differ)" in err


def test_unwritable_run_dir_is_refused(setup, capsys):
    blocker = setup["tmp"] / "file"
    blocker.write_text("")
    args = argv(setup)
    args[args.index("--run-dir") + 1] = str(blocker / "run")
    assert "is not usable" in refusal(capsys, args)


def test_dry_run_prints_each_rounds_full_verl_config(setup, capsys):
    assert iterative.main(argv(setup, "--dry-run", overrides=["trainer.total_epochs=3"])) == 0
    out = capsys.readouterr().out
    assert out.count("# round ") == 3
    configs = iterative.round_configs(iterative.parse_args(argv(setup, overrides=["trainer.total_epochs=3"])))
    limits = [c.data.max_response_length for c in configs]
    assert limits == [3000, 2000, 1000] == [c.actor_rollout_ref.rollout.response_length for c in configs]
    for t, config in enumerate(configs, start=1):
        assert config.reward.reward_manager.name == "thinkprune"
        assert config.reward.reward_kwargs.token_limit == limits[t - 1]
        assert config.trainer.resume_mode == "auto" and config.trainer.max_actor_ckpt_to_keep is None
        assert config.trainer.validation_data_dir.endswith(f"round_{t}_L{limits[t - 1]}/validation")
        assert config.trainer.total_epochs == 3
    assert configs[0].actor_rollout_ref.model.path == setup["model"]
    assert configs[1].actor_rollout_ref.model.path == "<model selected in round 1>"
    assert not (setup["tmp"] / "run").exists(), "a dry run creates nothing"


def test_relative_paths_are_resolved_for_steps_that_run_elsewhere(setup, monkeypatch):
    """A Ray job starts in the head node's working directory: every path the driver hands on is absolute."""
    monkeypatch.chdir(setup["tmp"])
    args = iterative.parse_args(
        ["--model", "model", "--train-files", "train.parquet", "--val-files", "val.parquet", "--test-files",
         "test.parquet", "--run-dir", "run"]
    )  # fmt: skip
    assert args.model == setup["model"] and args.run_dir == setup["tmp"] / "run"
    assert [args.train_files, args.val_files, args.test_files] == [[setup["train"]], [setup["val"]], [setup["test"]]]


@pytest.mark.parametrize("path", ["/data/my model=v2/", "/data/it's [new]"])
def test_paths_reach_verl_unchanged(path):
    config = iterative.compose_verl_config([f"actor_rollout_ref.model.path={iterative.quoted(path)}"])
    assert config.actor_rollout_ref.model.path == path


def measured(pass_at_1: float, mean_length: float) -> dict:
    return {"pass_at_1": pass_at_1, "mean_length": mean_length, "truncation_rate": 0.0}


def record(round_index: int, limit: int, steps: list[tuple[int, float, float]], selected: int | None) -> dict:
    validations = [{"step": s, "num_samples": 8, "under_limit": measured(p, m), "unlimited": None} for s, p, m in steps]
    return {
        "round": round_index,
        "limit": limit,
        "start_model": "base",
        "baseline": validations[0],
        "steps": validations,
        "saved_steps": [s for s, _, _ in steps[1:]],
        "selection": {"step": selected, "protocol": "paper", "reason": "test"},
        "output_model": f"round{round_index}",
    }


def evaluation(label: str, limit: int | None, pass_at_1: float, mean_length: float) -> dict:
    return {"label": label, "model": label, "limit": limit, "pass@1": pass_at_1, "mean_length": mean_length,
            "truncation_rate": 0.0, "problems": 10, "samples": 40}  # fmt: skip


def test_report_leads_with_the_held_out_evaluation_and_labels_validation_as_under_the_limit(tmp_path):
    records = [
        record(1, 80, [(0, 0.5, 70.0), (10, 0.85, 60.0), (20, 0.6, 40.0)], selected=10),
        record(2, 60, [(0, 0.85, 55.0), (10, 0.8, 50.0)], selected=10),
    ]
    evaluations = [evaluation("start model", None, 0.98, 100.0), evaluation("round 1 output", 80, 0.97, 70.0),
                   evaluation("round 2 output", 60, 0.96, 50.0)]  # fmt: skip
    settings = EvalSettings(samples=4, max_new_tokens=224)
    data = report.write(tmp_path, records, evaluations, settings)

    assert data["headline"] == "test set: mean length 100.0 -> 50.0 (-50.0%), pass@1 98.0% -> 96.0% (-2.0 points)"
    assert json.loads((tmp_path / "report.json").read_text())["evaluation"]["models"] == evaluations
    md = (tmp_path / "report.md").read_text()
    assert md.index("Held-out test set") < md.index("Checkpoint selection")
    assert "T=0.6, top_p=0.95, 4 samples per problem, up to 224 new tokens" in md
    assert "| round 2 output | 60 | 96.0% | -2.0 | 50.0 | -50.0% | 0.0% |" in md
    assert "| 10 | 0.8500 | 60.0 | 0.000 | selected |" in md
    image = matplotlib.image.imread(tmp_path / "report.png")
    assert image.shape[0] > 100 and image.shape[1] > 100


def test_without_evaluation_the_headline_says_it_is_validation_under_the_limit(tmp_path):
    data = report.write(tmp_path, [record(1, 80, [(0, 0.5, 70.0), (10, 0.6, 40.0)], selected=10)], [], None)
    assert data["headline"].startswith("validation under each round's limit (not the paper's measurement")


def test_report_axes_are_labelled(tmp_path):
    figure = report.plot(
        tmp_path, [record(1, 80, [(0, 0.8, 100.0), (10, 0.85, 70.0)], selected=None)], [], tmp_path / "p.png"
    )
    titles = [axes.get_title() for axes in figure.axes]
    assert any("held-out test set" in title for title in titles)
    assert any(title.startswith("training: truncation rate at L") for title in titles)
    assert any(title.startswith("selection: validation under each round's limit") for title in titles)
    assert Path(tmp_path / "p.png").stat().st_size > 0
