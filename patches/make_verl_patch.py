"""Writes patches/verl-0.9.1-thinkprune.patch from the package's own files and an installed verl 0.9.1.

The patch adds the ThinkPrune reward manager (registered as "thinkprune") and the `+reward_manager=thinkprune`
config group to a verl source tree, for teams that run a fork, and lists the manager's copyright line among the
license headers verl's own check accepts (tests/special_sanity/check_license.py, which accepts listed ones only).
Apply it from the fork's root: `git apply` or `patch -p1`. Regenerate after changing the manager:
`python patches/make_verl_patch.py`.
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

import verl

REPO = Path(__file__).resolve().parents[1]
PATCH = REPO / "patches" / f"verl-{verl.__version__}-thinkprune.patch"
MANAGERS_INIT = "verl/experimental/reward_loop/reward_manager/__init__.py"
MANAGER = REPO / "verl_thinkprune" / "reward_manager.py"
GROUP = REPO / "verl_thinkprune" / "config" / "reward_manager" / "thinkprune.yaml"
ROLLOUT_HOOK_KEYS = {"add_length_prompt"}
LICENSE_CHECK = "tests/special_sanity/check_license.py"


def file_diff(path: str, old: str, new: str) -> str:
    """A git-style unified diff of one file (old == "" for an added file)."""
    header = f"diff --git a/{path} b/{path}\n" + ("new file mode 100644\n" if not old else "")
    lines = difflib.unified_diff(
        old.splitlines(keepends=True),
        new.splitlines(keepends=True),
        fromfile=f"a/{path}" if old else "/dev/null",
        tofile=f"b/{path}",
    )
    return header + "".join(lines)


def registered_init(init: str) -> str:
    """verl's reward_manager/__init__.py with the ThinkPrune manager imported and exported."""
    anchor = "from .remote import RemoteRewardManager\n"
    if anchor not in init:
        sys.exit(f"{MANAGERS_INIT} does not look like verl 0.9.1's: regenerate against a matching verl")
    init = init.replace(anchor, anchor + "from .thinkprune import ThinkPruneRewardManager\n")
    return init.replace('    "RemoteRewardManager",\n', '    "RemoteRewardManager",\n    "ThinkPruneRewardManager",\n')


def reward_only_group(group: str) -> str:
    """The config group without the rollout hook's settings: a fork gets the reward manager, not the agent loop."""
    kept, comments, in_reward = [], [], True
    for line in group.splitlines(keepends=True):
        if line.lstrip().startswith("#"):
            comments.append(line)
            continue
        if line[:1].isalpha():
            in_reward = line.startswith("reward:")
        if in_reward and line.split(":")[0].strip() not in ROLLOUT_HOOK_KEYS:
            kept += comments + [line]
        comments = []
    return "".join(kept)


def license_check_diff(manager: str) -> str:
    """Adds the manager's copyright line to verl's accepted license headers, where verl asks for custom ones.

    verl's source package does not ship its tests, so this hunk is written by hand: its context is the same from
    verl 0.9.0 on (git apply and patch find it at a shifted line).
    """
    holder = manager.splitlines()[0].removeprefix("# ")
    if not holder.startswith("Copyright "):
        sys.exit(f"{MANAGER} must start with its copyright line: verl's license check looks for it")
    return (
        f"diff --git a/{LICENSE_CHECK} b/{LICENSE_CHECK}\n--- a/{LICENSE_CHECK}\n+++ b/{LICENSE_CHECK}\n"
        "@@ -21,3 +21,4 @@\n"
        ' license_head_bytedance_26 = "Copyright 2026 Bytedance Ltd. and/or its affiliates"\n'
        " # Add custom license headers below\n"
        f'+license_head_verl_thinkprune = "{holder}"\n'
        ' license_head_prime = "Copyright 2024 PRIME team and/or its affiliates"\n'
        "@@ -35,2 +36,3 @@\n"
        " license_headers = [\n"
        "+    license_head_verl_thinkprune,\n"
        "     license_head_bytedance,\n"
    )


def build_patch(verl_root: Path) -> str:
    init = (verl_root / MANAGERS_INIT).read_text()
    manager = MANAGER.read_text()
    return "".join(
        [
            file_diff(MANAGERS_INIT, init, registered_init(init)),
            file_diff("verl/experimental/reward_loop/reward_manager/thinkprune.py", "", manager),
            file_diff("verl/trainer/config/reward_manager/thinkprune.yaml", "", reward_only_group(GROUP.read_text())),
            license_check_diff(manager),
        ]
    )


if __name__ == "__main__":
    PATCH.write_text(build_patch(Path(verl.__file__).resolve().parents[1]))
    print(f"wrote {PATCH.relative_to(REPO)}")
