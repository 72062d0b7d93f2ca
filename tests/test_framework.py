"""The collector framework: failures are contained, logged once, and reported per collector."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric

from nodeslo.collectors import COLLECTORS
from nodeslo.collectors.base import Collector, CollectorContext, CollectorSet
from nodeslo.log import OnceLog
from nodeslo.metrics import Desc
from support.exposition import samples, value

GOOD = Desc("nodeslo_test_good", "gauge", "A value.")
PARTIAL = Desc("nodeslo_test_partial", "gauge", "Yielded before the failure.")


class Good(Collector):
    name = "good"
    help = "works"

    def collect(self) -> Iterator[Metric]:
        yield GOOD.single(1)


class Broken(Collector):
    name = "broken"
    help = "raises half-way"
    message = "boom"

    def collect(self) -> Iterator[Metric]:
        yield PARTIAL.single(1)
        raise RuntimeError(self.message)


def scrape(collectors: list[Collector], errors: OnceLog | None = None) -> str:
    registry = CollectorRegistry()
    registry.register(CollectorSet(collectors, errors or OnceLog(logging.getLogger("t"))))
    return generate_latest(registry).decode()


def test_a_raising_collector_does_not_fail_the_scrape() -> None:
    ctx = CollectorContext()
    text = scrape([Broken(ctx), Good(ctx)])
    assert value(text, "nodeslo_collector_success", collector="broken") == 0
    assert value(text, "nodeslo_collector_success", collector="good") == 1
    assert value(text, "nodeslo_test_good") == 1
    # Partial output of the failed collector is dropped, not half-served.
    assert "nodeslo_test_partial" not in {n for n, _ in samples(text)}


def test_every_collector_raising_at_once_still_serves_a_scrape() -> None:
    ctx = CollectorContext()
    text = scrape([Broken(ctx)])
    assert value(text, "nodeslo_collector_success", collector="broken") == 0
    assert value(text, "nodeslo_collector_duration_seconds", collector="broken") >= 0


def test_repeated_failure_is_logged_once_and_recovery_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    errors = OnceLog(logging.getLogger("nodeslo.collector"))
    ctx = CollectorContext(errors=errors)
    broken = Broken(ctx)
    cset = CollectorSet([broken], errors)
    for _ in range(10):
        list(cset.collect())
    failures = [r for r in caplog.records if r.getMessage() == "collector failed"]
    assert len(failures) == 1
    # A different error is news and is logged.
    broken.message = "other"
    list(cset.collect())
    assert len([r for r in caplog.records if r.getMessage() == "collector failed"]) == 2
    # Recovery is logged once; the same failure after recovery is logged again.
    broken.collect = lambda: iter([GOOD.single(1)])  # type: ignore[method-assign]
    list(cset.collect())
    list(cset.collect())
    assert len([r for r in caplog.records if r.getMessage() == "collector recovered"]) == 1
    assert cset.status["broken"].success is True


def test_once_log_is_bounded() -> None:
    once = OnceLog(logging.getLogger("t"), limit=3)
    for i in range(10):
        assert once.warn("k", f"message {i}")
    assert len(once._seen) <= 3


def test_descriptors_enforce_naming() -> None:
    with pytest.raises(ValueError, match="prefix"):
        Desc("disk_reads_total", "counter", "x")
    with pytest.raises(ValueError, match="_total"):
        Desc("nodeslo_disk_reads", "counter", "x")
    with pytest.raises(ValueError, match="_total"):
        Desc("nodeslo_disk_io_in_progress_total", "gauge", "x")


def test_every_registered_collector_has_help_and_a_unique_name() -> None:
    assert {"diskstats", "scheduler"} <= set(COLLECTORS)
    for name, cls in COLLECTORS.items():
        assert cls.name == name
        assert cls.help.strip()
