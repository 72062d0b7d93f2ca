"""A BMC that answers nonsense: issue 19's hostile-input rule for the device the bmc
collector reads through its helper (tests/test_fuzz_hostile.py fuzzes the files the
other collectors read).

Any whitelisted command may get any answer: random bytes, its real answer cut short or
lengthened, a random completion code, every byte 0xFF, the longest answer the kernel
passes. What each gets: the poll round handles it (no exception leaves the poller; the
BMC reads as not answering with reason "error", or one sensor as unavailable, or the
bytes are decoded as what they say), the scrape renders with every value finite, and
once the BMC answers sanely again the exposition equals the healthy one. What the
poller caches (the identity, the SDR, the thresholds) is replaced when the repository
changes, as after a firmware update, so the test changes it before comparing; the SEL
event counter keeps what it counted, as any counter does.
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from nodeslo.collectors import bmc as collector_module
from nodeslo.collectors.bmc import BmcCollector
from nodeslo.ipmi import requests
from nodeslo.ipmi.requests import Request
from support.exposition import VOLATILE, Sample, samples
from support.fakebmc import FakeBmc
from test_bmc_collector import context, fake

COMMANDS = sorted(requests.ALLOWED)
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Counts what was read, whatever it was: keeps the junk it counted, as a counter must.
KEEPS = ("nodeslo_bmc_sel_events_total",)

Mutation = Callable[[bytes], bytes]
FIXED: dict[str, Mutation] = {
    "empty": lambda answer: b"",
    "completion-code-only": lambda answer: answer[:1],
    "cut-in-half": lambda answer: answer[: max(1, len(answer) // 2)],
    "one-byte-short": lambda answer: answer[:-1],
    "one-byte-long": lambda answer: answer + b"\x00",
    "all-ones": lambda answer: b"\xff" * len(answer),
    "ones-after-the-code": lambda answer: answer[:1] + b"\xff" * (len(answer) - 1),
    "longest": lambda answer: b"\x00" + b"\xff" * (requests.MAX_RESPONSE - 1),
    "vendor-code": lambda answer: b"\x80" + answer[1:],
}


class HostileBmc:
    """The fake BMC, but `command`'s answers go through `mutate`."""

    def __init__(self, bmc: FakeBmc) -> None:
        self.bmc = bmc
        self.command: tuple[int, int] | None = None
        self.mutate: Mutation = lambda answer: answer

    def call(self, request: Request, timeout: float) -> bytes:
        answer = self.bmc.call(request, timeout)
        if (request.netfn, request.cmd) == self.command:
            return self.mutate(answer)
        return answer

    def close(self) -> None:
        pass


@pytest.fixture(autouse=True)
def _transport_hook(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    real = collector_module.transport

    def pick(options: argparse.Namespace) -> tuple[object, str]:
        given = getattr(options, "bmc_transport_for_test", None)
        return (given, "test") if given is not None else real(options)

    monkeypatch.setattr(collector_module, "transport", pick)
    yield


def _scrape(collector: BmcCollector) -> dict[Sample, float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {k: v for k, v in samples(text).items() if not any(p.search(k[0]) for p in VOLATILE)}


def _problems(command: tuple[int, int], mutate: Mutation) -> list[str]:
    hostile = HostileBmc(fake())
    collector = BmcCollector(context(transport=hostile))
    collector.poller._presence = lambda: None
    collector.poller.poll_round()
    healthy = _scrape(collector)
    name = requests.ALLOWED[command][0]
    problems = []
    hostile.command, hostile.mutate = command, mutate
    hostile.bmc.addition_timestamp += 1  # so the cached answers are asked for again too
    for _ in range(2):  # a first round walks the SDR, the second reads from the cache
        try:
            collector.poller.poll_round()
        except Exception as exc:  # what the test is for
            return [f"{name}: the poll round raised {type(exc).__name__}: {exc}"]
        during = _scrape(collector)
        bad = [k for k, v in during.items() if not math.isfinite(v)]
        if bad:
            problems.append(f"{name}: values no float holds: {bad[:3]}")
        up = [(dict(k[1])["reason"], v) for k, v in during.items() if k[0] == "nodeslo_bmc_up"]
        if up not in ([("", 1.0)], [("error", 0.0)]):
            problems.append(f"{name}: nodeslo_bmc_up {up}")
    hostile.command = None
    hostile.bmc.addition_timestamp += 1  # the repository changed: cached answers go
    collector.poller.poll_round()
    after = _scrape(collector)
    changed = sorted(
        k
        for k in healthy.keys() | after.keys()
        if k[0] not in KEEPS and healthy.get(k) != after.get(k)
    )
    if changed:
        problems.append(f"{name}: left a trace once sane again: {changed[:3]}")
    return problems


@pytest.mark.parametrize("kind", sorted(FIXED))
def test_every_command_survives_each_kind_of_broken_answer(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL)  # each broken answer is logged; not the point here
    problems = [p for command in COMMANDS for p in _problems(command, FIXED[kind])]
    assert not problems, "\n".join(problems)


@FUZZ
@given(
    command=st.sampled_from(COMMANDS),
    keep=st.integers(min_value=0, max_value=40),
    garbage=st.binary(max_size=64),
    replace=st.booleans(),
)
def test_random_answers_cost_only_that_round(
    command: tuple[int, int], keep: int, garbage: bytes, replace: bool
) -> None:
    """The answer replaced by random bytes, or its first `keep` bytes kept and random
    bytes after them (a real-looking answer with a broken tail)."""

    def mutate(answer: bytes) -> bytes:
        return garbage if replace else answer[:keep] + garbage

    problems = _problems(command, mutate)
    assert not problems, "\n".join(problems)
