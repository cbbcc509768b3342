"""The ways users reach the reward manager: Hydra group, verl plugin registry, copied file, patched verl fork."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import verl
from conftest import REPO
from verl.experimental.reward_loop.reward_manager.registry import get_reward_manager_cls
from verl.trainer.ppo.reward import resolve_reward_manager_cls
from verl.utils.import_utils import load_extern_object

from verl_thinkprune import plugin
from verl_thinkprune.iterative import compose_verl_config
from verl_thinkprune.reward_manager import ThinkPruneRewardManager

MANAGER_FILE = REPO / "verl_thinkprune" / "reward_manager.py"
PATCH = REPO / "patches" / f"verl-{verl.__version__}-thinkprune.patch"

HIDE_PACKAGE = '''
import importlib.abc, sys
class _HidePackage(importlib.abc.MetaPathFinder):
    """Makes verl-thinkprune unimportable, as on a machine where only the copied file exists."""
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "verl_thinkprune" or name.startswith("hydra_plugins.verl_thinkprune"):
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, _HidePackage())
'''

SCORE_ONE_BATCH = """
import asyncio
try:
    import verl_thinkprune
    raise SystemExit("verl_thinkprune must not be importable here")
except ModuleNotFoundError:
    pass
sys.path.insert(0, {tests!r})
from conftest import make_batch
from hydra import compose, initialize_config_module
from transformers import AutoTokenizer
from verl.experimental.reward_loop import RewardLoopWorker
with initialize_config_module(config_module="verl.trainer.config", version_base=None):
    overrides = {overrides!r} + ["actor_rollout_ref.model.path={model_dir}", "data.max_response_length=32"]
    config = compose("ppo_trainer", overrides=overrides)
tokenizer = AutoTokenizer.from_pretrained({model_dir!r})
right = tokenizer.encode("\\\\boxed{{42}}") + [tokenizer.eos_token_id]
truncated = tokenizer.encode("\\\\boxed{{42}} x" * 8)[:32]

async def run():
    worker = RewardLoopWorker(config)
    print("MANAGER", type(worker.reward_manager).__module__)
    return await worker.compute_score_batch(make_batch(tokenizer, [right, truncated], [42, 42], padded_to=32))
print("SCORES", [o["reward_score"] for o in asyncio.run(run())])
"""


def run_without_package(overrides: list[str], model_dir: Path, env: dict | None = None) -> str:
    script = HIDE_PACKAGE + SCORE_ONE_BATCH.format(
        tests=str(REPO / "tests"), overrides=overrides, model_dir=str(model_dir)
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_hydra_group_selects_thinkprune_and_exposes_its_knobs():
    config = compose_verl_config(["+reward_manager=thinkprune", "reward.reward_kwargs.token_limit=3000"])
    assert config.reward.reward_manager.source == "register"
    assert config.reward.reward_manager.name == "thinkprune"
    assert config.reward.reward_kwargs.token_limit == 3000
    assert config.reward.reward_kwargs.grading_timeout is None, "null: the manager's one default"
    assert resolve_reward_manager_cls(config) is ThinkPruneRewardManager


def test_main_ppo_command_line_composes_the_group():
    """The user's exact entry point, stopped after composition by Hydra's --cfg."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "verl.trainer.main_ppo",
            "+reward_manager=thinkprune",
            "--cfg",
            "job",
            "--package",
            "reward",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "name: thinkprune" in result.stdout and "token_limit: null" in result.stdout


def test_verl_plugins_entry_point_registers_the_manager_in_a_fresh_process():
    entry_points = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="verl.plugins")}
    assert entry_points.get("thinkprune") == "verl_thinkprune.plugin"
    code = (
        "import verl; from verl.experimental.reward_loop.reward_manager.registry import get_reward_manager_cls; "
        "print(get_reward_manager_cls('thinkprune').__module__)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "verl_thinkprune.reward_manager"


def test_registry_name_resolves_without_the_hydra_group():
    config = compose_verl_config(["reward.reward_manager.name=thinkprune"])
    assert resolve_reward_manager_cls(config) is ThinkPruneRewardManager


def test_loading_the_file_again_beside_the_package_never_raises():
    """verl resolves the class in the TaskRunner and in every reward worker: a file path is exec'd each time."""
    first = load_extern_object(str(MANAGER_FILE), "ThinkPruneRewardManager")
    second = load_extern_object(str(MANAGER_FILE), "ThinkPruneRewardManager")
    assert first.__name__ == second.__name__ == "ThinkPruneRewardManager"
    assert get_reward_manager_cls("thinkprune") is ThinkPruneRewardManager, "the first registration stays"


def test_every_part_of_the_plugin_loads():
    assert plugin.load_parts() == []


def test_a_part_that_fails_to_load_is_logged_at_warning(caplog):
    with caplog.at_level(logging.WARNING, logger=plugin.__name__):
        failed = plugin.load_parts(("verl_thinkprune.reward_manager", "verl_thinkprune.no_such_part"))
    assert failed == ["verl_thinkprune.no_such_part"]
    assert "verl_thinkprune.no_such_part failed to load" in caplog.text


def test_copied_file_works_by_importlib_route_without_the_package(tmp_path, model_dir):
    copied = tmp_path / "thinkprune_reward.py"
    shutil.copy(MANAGER_FILE, copied)
    overrides = [
        "reward.reward_manager.source=importlib",
        f"reward.reward_manager.module.path={copied}",
        "reward.reward_manager.name=ThinkPruneRewardManager",
    ]
    out = run_without_package(overrides, model_dir)
    assert "MANAGER custom_module_" in out
    assert "SCORES [1.0, 0.0]" in out


def test_patch_is_current():
    sys.path.insert(0, str(REPO / "patches"))
    from make_verl_patch import build_patch

    assert PATCH.read_text() == build_patch(Path(verl.__file__).resolve().parents[1]), (
        "regenerate with `python patches/make_verl_patch.py`"
    )


def test_patched_verl_source_tree_serves_the_manager_and_the_group(tmp_path, model_dir):
    shutil.copytree(Path(verl.__file__).parent, tmp_path / "verl", ignore=shutil.ignore_patterns("__pycache__"))
    # verl's package has no tests/: the patch's hunk for verl's license check applies to a fork's checkout only.
    applied = subprocess.run(
        ["git", "apply", "--include=verl/*", str(PATCH)], cwd=tmp_path, capture_output=True, text=True
    )
    assert applied.returncode == 0, applied.stderr
    out = run_without_package(["+reward_manager=thinkprune"], model_dir, env={"PYTHONPATH": str(tmp_path)})
    assert "MANAGER verl.experimental.reward_loop.reward_manager.thinkprune" in out
    assert "SCORES [1.0, 0.0]" in out


def test_copied_file_needs_only_verl_torch_and_math_verify():
    imports = {
        line.split()[1].split(".")[0]
        for line in MANAGER_FILE.read_text().splitlines()
        if line.startswith(("import ", "from ")) and not line.startswith("from __future__")
    }
    assert imports - sys.stdlib_module_names <= {"torch", "verl", "math_verify"}, imports
