"""A failed scrape resolves nothing, live, on both rule engines.

alerts/tests/failed-scrapes.yaml shows it under promtool; this shows it where a pager
hears it: the real exporter, frozen (SIGSTOP: its scrapes time out, `up` falls to 0 and
every series of the host ends), scraped by Prometheus, or by vmagent → victoria-metrics
→ vmalert, with the generated rules of the e2e profile unchanged and Alertmanager
delivering to the test's webhook. `NetworkLinkDown` reads a link's carrier plainly, so
while the scrape fails only its branch that reads the rule's own `ALERTS` back can keep
it (docs/alerting.md, "A failed scrape resolves nothing"); on vmalert that read goes
through remote write and victoria-metrics. The alert must stay firing with the same
`activeAt` (its `for` not restarted), still say "has no carrier", and never reach the
pager as resolved; once carrier is back and the page resolved, the next failed scrape
must not fire it again (a resolved alert's `ALERTS` series is stale-marked, by vmalert
too, and the read finds nothing)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fixtures.make_fixtures import build, variant
from fixtures.spec import ServerSpec
from support import daemon as d
from support import scenario as sc
from support import stack as s

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

E2E_PROFILE = sc.SCENARIOS / "profiles" / "e2e.yaml"
LINK = {"alertname": "NetworkLinkDown", "interface": "ens1f1np1"}
# Seconds between scrapes and between evaluations. vmalert reads ALERTS back through
# remote write, and victoria-metrics judges a series stale from the spacing of its own
# samples: at 1 s evaluations, seconds of ingestion delay on a loaded machine lost the
# kept alert (once in 15 runs beside the scenarios, "resolved while unscraped"). At the
# pack's 1m such seconds are nothing; 5 s keeps it so here.
INTERVAL = {s.PROMETHEUS: 1.0, s.VICTORIAMETRICS: 5.0}
# NetworkLinkDown's `for` in the e2e profile (2m x 0.02).
FOR = 2.4


@pytest.fixture(scope="module")
def rules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pack")
    generated = d.run_cli("generate", "--rules-only", f"--profile={E2E_PROFILE}", f"--out={out}")
    assert generated.returncode == 0, generated.stderr
    return out / "alerts" / "nodeslo.rules.yaml"


@dataclass
class Server:
    daemon: d.Daemon
    root: Path
    healthy: ServerSpec

    @property
    def instance(self) -> str:
        return f"127.0.0.1:{self.daemon.port}"

    def freeze(self) -> None:
        """Scrapes time out from now on: `up` 0, every series of the host ends."""
        self.daemon.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.daemon.proc.send_signal(signal.SIGCONT)


@pytest.fixture
def link_down(tmp_path: Path) -> Iterator[Server]:
    """The exporter on a server whose data link ens1f1np1 had carrier when the exporter
    started (so it is expected up) and has lost it since."""
    root = tmp_path / "tree"
    healthy = variant("seed-spec-tuned", 4)
    build(root, healthy)
    daemon = d.start(root, f"--profile={E2E_PROFILE}").wait_listening()
    server = Server(daemon, root, healthy)
    try:
        assert 'nodeslo_network_carrier{interface="ens1f1np1"} 1' in daemon.scrape()
        build(root, healthy.with_faults("link-down"))
        yield server
    finally:
        server.thaw()  # a failing test may leave it frozen
        server.daemon.stop()


def _link_alert(stack: s.Stack) -> dict[str, Any] | None:
    for alert in stack.alerts():
        if all(alert["labels"].get(k) == v for k, v in LINK.items()):
            return alert
    return None


def _until(
    done: Callable[[], object],
    timeout: float,
    failure: str,
    check: Callable[[], object] = lambda: None,
) -> None:
    """Poll `done` until it is true, running `check` between polls; fail with
    `failure` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, failure
        check()
        time.sleep(0.2)


def _firing(stack: s.Stack, timeout: float) -> dict[str, Any]:
    def firing() -> bool:
        alert = _link_alert(stack)
        return alert is not None and alert["state"] == "firing"

    _until(firing, timeout, f"{stack.engine}: NetworkLinkDown not firing after {timeout}s")
    alert = _link_alert(stack)
    assert alert is not None, f"{stack.engine}: NetworkLinkDown resolved as it fired"
    return alert


def _still_the_same(stack: s.Stack, first: dict[str, Any], when: str) -> dict[str, Any]:
    alert = _link_alert(stack)
    assert alert is not None, f"{stack.engine}: NetworkLinkDown resolved {when}"
    assert alert["state"] == "firing", f"{stack.engine}: {when}: {alert}"
    assert alert["activeAt"] == first["activeAt"], f"{stack.engine}: `for` restarted {when}"
    assert "has no carrier" in alert["annotations"]["description"], (
        f"{stack.engine}: {when}: {alert['annotations']['description']}"
    )
    return alert


def _recorded_firing(stack: s.Stack, instance: str, timeout: float = 30.0) -> None:
    """Until the store returns the firing alert's ALERTS series, the one the kept branch
    reads back. Prometheus writes it into its own head at once; victoria-metrics finds
    a new series some seconds after vmalert writes it (6 s seen here): more than this
    test's evaluation interval, nothing beside the shipped 1m."""
    selector = ", ".join(f'{k}="{v}"' for k, v in {**LINK, "instance": instance}.items())
    query = f'ALERTS{{{selector}, alertstate="firing"}}'
    _until(lambda: stack.query(query), timeout, f"{stack.engine}: no firing ALERTS stored")


def _up(stack: s.Stack, instance: str) -> float | None:
    found = stack.query(f'up{{job="nodeslo", instance="{instance}"}}')
    return float(found[0]["value"][1]) if found else None


def _until_up(stack: s.Stack, server: Server, up: float, check: Callable[[], object]) -> None:
    _until(lambda: _up(stack, server.instance) == up, 60, f"{stack.engine}: up never {up:g}", check)


def _for_evaluations(seconds: float, check: Callable[[], object]) -> None:
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        check()
        time.sleep(0.2)


def test_a_link_without_carrier_keeps_paging_through_a_failed_scrape(
    engine: str, rules: Path, link_down: Server, tmp_path: Path
) -> None:
    server, instance = link_down, link_down.instance
    interval = INTERVAL[engine]
    # A firing page kept through three evaluations without data; a resolved one watched
    # for longer than its `for` and two more, so one brought back would fire meanwhile.
    kept_for, watched_for = 3 * interval, FOR + 2 * interval
    with s.running(
        tmp_path / engine, [instance], [str(rules)], interval=f"{interval:g}s", engine=engine
    ) as stack:
        stack.wait_scraped()
        first = _firing(stack, timeout=60)
        stack.webhook.wait_for(30, instance=instance, **LINK)
        _recorded_firing(stack, instance)

        server.freeze()
        _until_up(stack, server, 0, lambda: _still_the_same(stack, first, "before up fell"))
        # Until the series have ended (victoria-metrics may show a failed scrape's stale
        # markers a moment apart): then only the branch reading ALERTS back holds it.
        carrier = f'nodeslo_network_carrier{{instance="{instance}"}}'
        _until(
            lambda: not stack.query(carrier),
            30,
            f"{engine}: the carrier is still read",
            lambda: _still_the_same(stack, first, "before the carrier ended"),
        )
        _for_evaluations(kept_for, lambda: _still_the_same(stack, first, "while unscraped"))
        server.thaw()
        _until_up(stack, server, 1, lambda: _still_the_same(stack, first, "before up rose"))
        time.sleep(2 * interval)  # two evaluations on fresh data
        _still_the_same(stack, first, "after the scrape succeeded again")
        resolved = stack.webhook.received("resolved", instance=instance, **LINK)
        assert not resolved, f"{engine}: the pager heard NetworkLinkDown resolve: {resolved}"

        # Carrier back: the page resolves, and no failed scrape brings it back.
        build(server.root, server.healthy)
        _until(
            lambda: not _link_alert(stack) and stack.webhook.received("resolved", **LINK),
            30,
            f"{engine}: NetworkLinkDown never resolved",
        )
        pages = len(stack.webhook.firing(**LINK))
        server.freeze()
        _until_up(stack, server, 0, lambda: _not_firing(stack, "before up fell"))
        _for_evaluations(watched_for, lambda: _not_firing(stack, "while unscraped"))
        server.thaw()
        again = stack.webhook.firing(**LINK)[pages:]
        assert not again, f"{engine}: a failed scrape paged the resolved link again: {again}"


def _not_firing(stack: s.Stack, when: str) -> None:
    """Firing, not pending: on victoria-metrics a failed scrape's stale markers may
    show a moment apart (a healthy link's `expected_up` still read, its carrier not),
    one evaluation of pending that a `for` keeps from firing."""
    alert = _link_alert(stack)
    assert alert is None or alert["state"] != "firing", (
        f"{stack.engine}: a resolved NetworkLinkDown fires again {when}: {alert}"
    )
