"""Checkpoint selection from validation dumps written by verl's own dump writer, under both selection protocols."""

from __future__ import annotations

from pathlib import Path

import pytest
from verl.trainer.ppo.ray_trainer import RayPPOTrainer

from verl_thinkprune.selection import Measurement, StepValidation, read_validations, select_checkpoint

LIMIT = 40


def write_dump(
    directory: Path, step: int, accs: list[float], lengths: list[int], truncated: list[int], limit: int = LIMIT
) -> None:
    """A dump as verl writes it at validation (score and reward_extra_info per sample)."""
    n = len(accs)
    extra = {
        "reward": accs,
        "acc": accs,
        "truncated": truncated,
        "response_length": lengths,
        "token_limit": [limit] * n,
    }
    RayPPOTrainer._write_generations(["q"] * n, ["a"] * n, ["42"] * n, accs, extra, str(directory), step)


def validation(step: int, pass_at_1: float, mean_length: float, unlimited: tuple[float, float] | None = None):
    measured = None if unlimited is None else Measurement(unlimited[0], unlimited[1], 0.0)
    return StepValidation(step, 10, Measurement(pass_at_1, mean_length, 0.0), measured)


def test_dumps_under_the_limit_aggregate_to_pass_at_1_mean_length_and_truncation(tmp_path):
    write_dump(tmp_path, 0, [1, 0, 1, 0], [10, 40, 20, 40], [0, 1, 0, 1])
    write_dump(tmp_path, 20, [1, 1, 1, 0], [10, 10, 12, 8], [0, 0, 0, 0])
    found = read_validations(tmp_path, LIMIT)
    assert found[0] == StepValidation(0, 4, Measurement(0.5, 27.5, 0.5), unlimited=None)
    assert found[20] == StepValidation(20, 4, Measurement(0.75, 10.0, 0.0), unlimited=None)


def test_an_unlimited_dump_also_yields_what_the_limit_would_have_measured(tmp_path):
    """Generated up to 100 tokens: a right answer of 60 tokens counts without the limit, and as truncated under 40."""
    write_dump(tmp_path, 0, [1, 1, 0, 1], [60, 20, 100, 40], [0, 0, 1, 0], limit=100)
    validation = read_validations(tmp_path, LIMIT)[0]
    assert validation.unlimited == Measurement(pass_at_1=0.75, mean_length=55.0, truncation_rate=0.25)
    assert validation.under_limit == Measurement(pass_at_1=0.5, mean_length=35.0, truncation_rate=0.5)


def test_a_dump_cut_short_by_a_kill_is_left_out(tmp_path):
    write_dump(tmp_path, 0, [1, 0, 1, 0], [10, 40, 20, 30], [0] * 4)
    write_dump(tmp_path, 20, [1, 1, 1, 1], [5, 5, 5, 5], [0] * 4)
    write_dump(tmp_path, 40, [1, 1, 1, 1], [5, 5, 5, 5], [0] * 4)
    (tmp_path / "20.jsonl").write_text("".join((tmp_path / "20.jsonl").read_text().splitlines(True)[:2]))
    text = (tmp_path / "40.jsonl").read_text()
    (tmp_path / "40.jsonl").write_text(text[: len(text) - 9])  # the last line half written
    assert sorted(read_validations(tmp_path, LIMIT)) == [0]


def test_shortest_checkpoint_within_the_accuracy_floor_wins():
    baseline = validation(0, 0.50, 100.0)
    candidates = [
        validation(20, 0.55, 80.0),
        validation(40, 0.44, 40.0),  # shortest, but pass@1 fell by 12%
        validation(60, 0.45, 60.0),  # exactly 10% below: qualifies
        validation(80, 0.60, 70.0),
    ]
    selection = select_checkpoint(baseline, candidates, max_relative_drop=0.10)
    assert selection.step == 60 and selection.protocol == "paper"
    assert "3 of 4 checkpoints" in selection.reason


def test_a_truncated_baseline_hides_an_accuracy_loss_that_unlimited_selection_refuses():
    """Under L the start model's long right answers score 0: a checkpoint that lost real accuracy clears the floor."""
    baseline = validation(0, 0.50, 40.0, unlimited=(0.95, 70.0))
    lost_accuracy = validation(20, 0.80, 30.0, unlimited=(0.80, 30.0))
    kept_accuracy = validation(40, 0.90, 35.0, unlimited=(0.93, 36.0))
    candidates = [lost_accuracy, kept_accuracy]
    assert select_checkpoint(baseline, candidates, 0.10, "paper").step == 20
    unlimited = select_checkpoint(baseline, candidates, 0.10, "unlimited")
    assert unlimited.step == 40 and unlimited.protocol == "unlimited"
    assert "without the limit" in unlimited.reason


def test_unlimited_selection_needs_unlimited_validations():
    with pytest.raises(ValueError, match="validated under the limit only"):
        select_checkpoint(validation(0, 0.5, 40.0), [validation(20, 0.5, 30.0)], 0.1, "unlimited")


def test_ties_go_to_higher_pass_at_1_then_earlier_step():
    baseline = validation(0, 0.5, 100.0)
    assert select_checkpoint(baseline, [validation(20, 0.5, 50.0), validation(40, 0.6, 50.0)]).step == 40
    assert select_checkpoint(baseline, [validation(40, 0.6, 50.0), validation(20, 0.6, 50.0)]).step == 20


def test_no_qualifying_checkpoint_carries_the_start_model_forward():
    selection = select_checkpoint(validation(0, 0.8, 100.0), [validation(20, 0.5, 30.0)], max_relative_drop=0.1)
    assert selection.step is None
    assert "start model carries forward" in selection.reason


@pytest.mark.parametrize("drop", [0.0, 0.5])
def test_threshold_is_configurable(drop):
    selection = select_checkpoint(validation(0, 0.8, 100.0), [validation(20, 0.6, 30.0)], max_relative_drop=drop)
    assert selection.step == (20 if drop == 0.5 else None)
