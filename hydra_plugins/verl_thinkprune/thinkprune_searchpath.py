"""Lets `python -m verl.trainer.main_ppo +reward_manager=thinkprune` find the package's config group."""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class ThinkPruneSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="verl-thinkprune", path="pkg://verl_thinkprune.config")
