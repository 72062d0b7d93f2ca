"""The daemon's own metrics: version, profile in force, profile reloads."""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import Metric

from nodeslo import __version__
from nodeslo.metrics import Desc
from nodeslo.profile import Profile

BUILD_INFO = Desc(
    "nodeslo_build_info",
    "gauge",
    "Always 1; the labels carry the nodeslo and Python versions.",
    ("version", "python_version"),
)
PROFILE_INFO = Desc(
    "nodeslo_profile_info",
    "gauge",
    "Always 1; the profile in force and the sha256 of its effective content.",
    ("profile", "sha256"),
)
RELOAD_SUCCESS = Desc(
    "nodeslo_profile_last_reload_successful",
    "gauge",
    "1 when the last profile load or SIGHUP reload succeeded, 0 when the old profile was kept.",
)
RELOAD_TIMESTAMP = Desc(
    "nodeslo_profile_last_reload_success_timestamp_seconds",
    "gauge",
    "Unix time of the last successful profile load.",
)


@dataclass
class ReloadState:
    successful: bool = True
    success_timestamp: float = 0.0


class SelfCollector:
    def __init__(self, profile: Callable[[], Profile], reload: ReloadState) -> None:
        self._profile = profile
        self._reload = reload

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        profile = self._profile()
        yield BUILD_INFO.single(1, __version__, platform.python_version())
        yield PROFILE_INFO.single(1, profile.name, profile.sha256)
        yield RELOAD_SUCCESS.single(1 if self._reload.successful else 0)
        yield RELOAD_TIMESTAMP.single(self._reload.success_timestamp)
