"""Scenario player: a fixture tree that changes over time, per a small YAML file.

A scenario names a fixture variant and a compression factor (`speed`: fixture seconds
per wall-clock second). The player re-renders the tree every `tick` with the uptime
advanced, so every counter grows at `speed` times its rate; at each step's time it
switches fixture faults on or off (a member failing, a critical-warning NVMe page, a
throttling CPU ...), makes the CPU temperatures climb (`heat`: °C added, reached over
`over`), changes the storage probe's injected I/O delay (`io_delay: 5s`, or `hang`:
blocked until a later step sets another), kills the exporter, or restarts it on the
same port (`restart: exporter`, a reboot as Prometheus sees it). The expected alerts
and the silences a scenario requires live in the same file; tests/test_e2e_scenarios.py
runs them against a real Prometheus + Alertmanager.

    description: md0 loses a member
    variant: seed-spec-tuned
    speed: 60
    steps:
      - {at: 10s, faults: [raid-degraded]}
    expect:
      - {alert: RAIDArrayDegraded, severity: critical, receiver: pager,
         labels: {device: md0}, within: 90s}

`silent` lists label matchers of which no notification may arrive by `duration`;
`inhibited` lists alerts that must be active in Alertmanager by then, yet inhibited;
`still_firing` lists alerts that must still be active by then, never once resolved.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from fixtures.make_fixtures import build, variant
from fixtures.spec import ServerSpec
from nodeslo.units import parse_duration

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"


@dataclass(frozen=True)
class Step:
    at: float
    faults: frozenset[str] = frozenset()
    clear: frozenset[str] = frozenset()
    io_delay_us: float | None = None
    heat_celsius: float | None = None  # reached linearly over `over` seconds from `at`
    over: float = 0.0
    kill: bool = False
    restart: bool = False


@dataclass(frozen=True)
class Expectation:
    alert: str | None
    severity: str | None
    receiver: str | None
    labels: dict[str, str]
    within: float

    def matches(self) -> dict[str, str]:
        wanted = dict(self.labels)
        if self.alert:
            wanted["alertname"] = self.alert
        if self.severity:
            wanted["severity"] = self.severity
        return wanted


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    variant: str
    cpus: int
    speed: float
    tick: float
    flags: tuple[str, ...]
    steps: tuple[Step, ...]
    expect: tuple[Expectation, ...]
    silent: tuple[dict[str, str], ...]
    inhibited: tuple[dict[str, str], ...]
    still_firing: tuple[dict[str, str], ...]
    duration: float

    def spec_at(self, elapsed: float, base: ServerSpec) -> ServerSpec:
        faults = set(base.faults)
        for step in self.steps:
            if step.at <= elapsed:
                faults |= step.faults
                faults -= step.clear
        return replace(
            base,
            uptime_seconds=base.uptime_seconds + self.speed * elapsed,
            faults=frozenset(faults),
            heat_celsius=self.heat_at(elapsed, base.heat_celsius),
        )

    def heat_at(self, elapsed: float, heat: float) -> float:
        """Each heat step climbs from the previous level to its own, linearly."""
        for step in self.steps:
            if step.heat_celsius is None or step.at > elapsed:
                continue
            done = 1.0 if step.over <= 0 else min(1.0, (elapsed - step.at) / step.over)
            heat += (step.heat_celsius - heat) * done
        return heat

    def io_delay_at(self, elapsed: float) -> float:
        delay = 0.0
        for step in self.steps:
            if step.at <= elapsed and step.io_delay_us is not None:
                delay = step.io_delay_us
        return delay


def _seconds(value: Any) -> float:
    return parse_duration(value)


def _io_delay_us(value: Any) -> float:
    """A duration, or `hang`: the probe's I/O blocks until a later step releases it."""
    return math.inf if value == "hang" else _seconds(value) * 1e6


def _matchers(items: list[dict[str, Any]]) -> tuple[dict[str, str], ...]:
    return tuple({k: str(v) for k, v in item.items()} for item in items)


def load(name: str) -> Scenario:
    raw = yaml.safe_load((SCENARIOS / f"{name}.yaml").read_text())
    steps = tuple(
        Step(
            at=_seconds(s["at"]),
            faults=frozenset(s.get("faults", ())),
            clear=frozenset(s.get("clear", ())),
            io_delay_us=_io_delay_us(s["io_delay"]) if "io_delay" in s else None,
            heat_celsius=float(s["heat"]) if "heat" in s else None,
            over=_seconds(s.get("over", "0s")),
            kill=s.get("kill") == "exporter",
            restart=s.get("restart") == "exporter",
        )
        for s in raw.get("steps", [])
    )
    expect = tuple(
        Expectation(
            alert=e.get("alert"),
            severity=e.get("severity"),
            receiver=e.get("receiver"),
            labels={k: str(v) for k, v in e.get("labels", {}).items()},
            within=_seconds(e.get("within", "120s")),
        )
        for e in raw.get("expect", [])
    )
    return Scenario(
        name=name,
        description=raw["description"],
        variant=raw.get("variant", "seed-spec-tuned"),
        cpus=int(raw.get("cpus", 4)),
        speed=float(raw.get("speed", 1)),
        tick=_seconds(raw.get("tick", "2s")),
        flags=tuple(raw.get("flags", ())),
        steps=steps,
        expect=expect,
        silent=_matchers(raw.get("silent", [])),
        inhibited=_matchers(raw.get("inhibited", [])),
        still_firing=_matchers(raw.get("still_firing", [])),
        duration=_seconds(raw.get("duration", "0s")),
    )


def names() -> list[str]:
    return sorted(p.stem for p in SCENARIOS.glob("*.yaml"))


@dataclass
class Player:
    """Advances one scenario's tree in a background thread."""

    scenario: Scenario
    root: Path
    delay_file: Path
    on_kill: Callable[[], None] = lambda: None
    on_restart: Callable[[], None] = lambda: None
    started: float = 0.0
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._base = variant(self.scenario.variant, self.scenario.cpus)
        self._stop = threading.Event()
        self._killed = False
        self._restarted: set[int] = set()
        self._thread = threading.Thread(
            target=self._run, name=f"player-{self.scenario.name}", daemon=True
        )

    def prepare(self) -> None:
        """The tree as it is at t=0, before the daemon starts."""
        build(self.root, self.scenario.spec_at(0.0, self._base))
        self._set_delay("0")

    def _set_delay(self, text: str) -> None:
        """Replaced in one rename: the shim must never read a half-written file (an
        empty read is no delay, which would release a hang)."""
        partial = self.delay_file.with_name(self.delay_file.name + ".new")
        partial.write_text(text + "\n")
        partial.replace(self.delay_file)

    def start(self) -> None:
        self.started = time.monotonic()
        self._thread.start()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def _run(self) -> None:
        while not self._stop.wait(self.scenario.tick):
            elapsed = self.elapsed()
            try:
                build(self.root, self.scenario.spec_at(elapsed, self._base))
                delay = self.scenario.io_delay_at(elapsed)
                self._set_delay("hang" if math.isinf(delay) else f"{delay:g}")
                if not self._killed and any(
                    s.kill and s.at <= elapsed for s in self.scenario.steps
                ):
                    self._killed = True
                    self.on_kill()
                for index, step in enumerate(self.scenario.steps):
                    if step.restart and step.at <= elapsed and index not in self._restarted:
                        self._restarted.add(index)
                        self.on_restart()
            except Exception as exc:  # surfaced by the test, never lost in a thread
                self.errors.append(f"{type(exc).__name__}: {exc}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
