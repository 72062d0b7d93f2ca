"""Metric descriptors: the public contract of a collector, declared at the top of its file.

A descriptor carries the full exposition name (`nodeslo_..._total` for counters), so
one search for a metric name lands on the line that defines it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

Kind = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True)
class Desc:
    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.name.startswith("nodeslo_"):
            raise ValueError(f"{self.name}: nodeslo metrics carry the nodeslo_ prefix")
        if (self.kind == "counter") != self.name.endswith("_total"):
            raise ValueError(f"{self.name}: counters and only counters end in _total")

    def family(self) -> Metric:
        """A fresh, empty family for one scrape."""
        labels = list(self.labels)
        if self.kind == "counter":
            return CounterMetricFamily(self.name, self.help, labels=labels)
        if self.kind == "gauge":
            return GaugeMetricFamily(self.name, self.help, labels=labels)
        return HistogramMetricFamily(self.name, self.help, labels=labels)

    def single(self, value: float, *label_values: str) -> Metric:
        """A family holding one sample."""
        family = self.family()
        family.add_metric(list(label_values), value)  # type: ignore[attr-defined]
        return family


def add(family: Metric, label_values: Sequence[str], value: float) -> None:
    """Add one sample; typed wrapper over the families' untyped add_metric."""
    family.add_metric(list(label_values), value)  # type: ignore[attr-defined]
