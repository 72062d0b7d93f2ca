"""From fault to page, for real: every scenario under tests/scenarios, end to end, on two
rule engines at once.

One `nodeslo serve` per scenario, each on its own fixture tree that a scenario player
changes over time, is scraped by two engines side by side: a real Prometheus, and
vmagent → victoria-metrics → vmalert (the Debian packages: the scale-out layout of
docs/scale-out.md), each with its own Alertmanager and webhook receiver. Both load the
same rules: what `nodeslo generate` makes of the e2e profile
(tests/scenarios/profiles/e2e.yaml: the shipped profile with `for:` compressed through
`alerting.for_scale` and the wake-up SLO removed), unchanged; each Alertmanager routes
critical alerts to the test's `pager` webhook and the rest to `ticket`, with the
inhibition rules of deploy/alertmanager/alertmanager.yml. Every expectation of a
scenario is asserted on both engines, within the same deadline and with the same
labels; a failure names the engine. All scenarios run at once, told apart by their
`instance` label, so the whole file costs about three minutes (the longest,
storage-hang, waits for the 2-minute stall and keeps checking after it).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import REPO, missing
from support import daemon as d
from support import scenario as sc
from support import stack as s

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

E2E_PROFILE = sc.SCENARIOS / "profiles" / "e2e.yaml"
SHIM = Path(__file__).parent / "support" / "shim"
ALERTMANAGER_EXAMPLE = REPO / "deploy" / "alertmanager" / "alertmanager.yml"


@dataclass
class Run:
    scenario: sc.Scenario
    player: sc.Player
    daemon: d.Daemon
    probe_dir: Path

    @property
    def instance(self) -> str:
        return f"127.0.0.1:{self.daemon.port}"


@dataclass
class World:
    stacks: dict[str, s.Stack]  # by engine
    runs: dict[str, Run]


def _engines() -> list[str]:
    """Prometheus always; victoria-metrics where installed (CI: always, or it fails in
    test_victoriametrics_installed). NODESLO_E2E_ENGINES=prometheus (comma-separated)
    narrows the run, e.g. to measure what the second engine costs."""
    if s.engine_missing(s.PROMETHEUS):
        missing("prometheus / prometheus-alertmanager are not installed (Debian packages)")
    wanted = os.environ.get("NODESLO_E2E_ENGINES", ",".join(s.ENGINES)).split(",")
    return [engine for engine in s.ENGINES if engine in wanted and not s.engine_missing(engine)]


def _alertmanager_config(path: Path, webhook_port: int) -> Path:
    """The test's receivers with the example config's inhibition rules."""
    config = s.default_alertmanager_config(webhook_port)
    config["inhibit_rules"] = yaml.safe_load(ALERTMANAGER_EXAMPLE.read_text())["inhibit_rules"]
    path.write_text(yaml.safe_dump(config))
    return path


def _selected(request: pytest.FixtureRequest) -> list[str]:
    """The scenarios of the tests this session runs (all of them, or those picked by -k)."""
    chosen = {
        item.callspec.params["name"]
        for item in request.session.items
        if item.module is request.module and hasattr(item, "callspec")
    }
    return [name for name in sc.names() if name in chosen]


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[World]:
    engines = _engines()
    workdir = tmp_path_factory.mktemp("e2e")
    generated = d.run_cli("generate", f"--profile={E2E_PROFILE}", f"--out={workdir / 'pack'}")
    assert generated.returncode == 0, generated.stderr
    rules = workdir / "pack" / "alerts" / "nodeslo.rules.yaml"
    runs: dict[str, Run] = {}
    try:
        for name in _selected(request):
            scenario = sc.load(name)
            root = workdir / name
            # tmpfs: a fast, quiet target, so latency is the shim's doing and nothing else.
            probe_dir = Path(tempfile.mkdtemp(prefix=f"nodeslo-e2e-{name}-", dir="/dev/shm"))
            player = sc.Player(scenario, root, workdir / f"{name}.delay")
            player.prepare()
            env = {
                "PYTHONPATH": str(SHIM),
                "NODESLO_SHIM_IO_DELAY_FILE": str(player.delay_file),
                "NODESLO_SHIM_IO_PREFIX": str(probe_dir),
            }
            flags = (
                f"--profile={E2E_PROFILE}",
                f"--collector.nvme.replay-dir={root / 'nvme-replay'}",
                "--collector.nvme.poll-interval=1s",
                "--probe.storage",
                f"--probe.storage.target={probe_dir}",
                *scenario.flags,
            )
            daemon = d.start(root, *flags, env=env).wait_listening()
            player.on_kill = daemon.proc.kill
            run = runs[name] = Run(scenario, player, daemon, probe_dir)
            player.on_restart = functools.partial(_restart, run, root, flags, env)
        for run in runs.values():
            _wait_probing(run)
        with contextlib.ExitStack() as engines_running:
            stacks = {
                engine: engines_running.enter_context(
                    s.running(
                        workdir / engine,
                        [run.instance for run in runs.values()],
                        [str(rules)],
                        # Sixteen daemons scraped every second kept two cores busy: a
                        # scrape took 0.65 s at the median, one in four past 0.9 s, and
                        # ~20 a run failed their 1 s timeout (each one ending every
                        # series of its host for a moment: docs/alerting.md, "A failed
                        # scrape resolves nothing"). Every 2 s: 0.11 s at the median.
                        # The engine still evaluates every second.
                        scrape_interval="2s",
                        engine=engine,
                        alertmanager_config=functools.partial(
                            _alertmanager_config, workdir / f"am-{engine}.yml"
                        ),
                    )
                )
                for engine in engines
            }
            for stack in stacks.values():
                stack.wait_scraped(min_targets=len(runs))
            for run in runs.values():
                run.player.start()
            yield World(stacks, runs)
    finally:
        _stop_all(runs.values())


def _stop_all(runs: Iterable[Run]) -> None:
    """Every daemon, whatever one of them does: a stop that fails must not leave the
    others (and their probes, 10 I/Os a second each) loading the rest of the suite. A
    daemon still there 30 s after SIGTERM (systemd waits 90 s) is an error, raised once
    all are down; how fast a daemon stops is tests/test_daemon.py's to check."""
    failures: list[BaseException] = []
    for run in runs:
        try:
            run.player.stop()
        except Exception as exc:
            failures.append(exc)
        try:
            run.daemon.stop(timeout=30.0)
        except Exception as exc:
            failures.append(exc)
        shutil.rmtree(run.probe_dir, ignore_errors=True)
    if failures:
        raise failures[0]


def _restart(run: Run, root: Path, flags: tuple[str, ...], env: dict[str, str]) -> None:
    """A reboot as Prometheus sees it: the exporter gone, then back on the same port."""
    port = run.daemon.port
    run.daemon.stop(signal.SIGKILL)
    listen = f"--web.listen-address=127.0.0.1:{port}"
    run.daemon = d.start(root, *flags, listen, env=env).wait_listening()


def _wait_probing(run: Run, timeout: float = 120.0) -> None:
    """Until the daemon's storage probe has its file in place and has sampled it.

    Before that, intended starts the probe could not run yet (its 64 MiB file being
    written, on a CI VM busy starting fifteen daemons) are rightly counted bad; the
    scenarios' windows are seconds long, so they must begin after that start-up, as a
    server's hour does, not in it."""
    deadline = time.monotonic() + timeout
    target = f'target="{run.probe_dir}"'
    while True:
        text = run.daemon.scrape()
        described = any(
            line.startswith("nodeslo_probe_storage_target_info{") and target in line
            for line in text.splitlines()
        )
        if described and 'nodeslo_probe_up{probe="storage"} 1.0' in text:
            return
        assert time.monotonic() < deadline, f"{run.scenario.name}: the storage probe never ran"
        time.sleep(0.2)


def _probe_counters(stack: s.Stack, instance: str) -> str:
    """What the storage probe counted, for a failure message: bad events have a cause."""
    exprs = (
        f'nodeslo_probe_io_latency_seconds_count{{instance="{instance}"}}',
        f'nodeslo_probe_io_latency_seconds_bucket{{instance="{instance}",le=~"5e-05|0.0001|0.02"}}',
        f'nodeslo_probe_io_missed_total{{instance="{instance}"}} > 0',
        f'nodeslo_probe_io_errors_total{{instance="{instance}"}} > 0',
    )
    lines = []
    for expr in exprs:
        for result in stack.query(expr):
            labels = {k: v for k, v in result["metric"].items() if k not in ("instance", "job")}
            lines.append(f"  {labels} {result['value'][1]}")
    return "\n".join(lines)


def _pipeline(stack: s.Stack, instance: str) -> str:
    """Where an expected page stopped, for a failure message: the rule engine's alerts
    of the server and Alertmanager's view of them."""
    engine = sorted(
        f"{a['labels'].get('alertname')}:{a['state']}"
        for a in stack.alerts()
        if a["labels"].get("instance") == instance
    )
    manager = sorted(
        f"{a['labels'].get('alertname')}:{a['status']['state']}"
        for a in stack.alertmanager_alerts(instance=instance)
    )
    return f"  rule engine: {', '.join(engine)}\n  alertmanager: {', '.join(manager)}"


def _timeline(stack: s.Stack, run: Run) -> str:
    """Every notification of the scenario's server, in order, for a failure message."""
    start = time.time() - run.player.elapsed()  # notifications carry wall-clock times
    sent = stack.webhook.received("firing", instance=run.instance)
    sent += stack.webhook.received("resolved", instance=run.instance)
    return "\n".join(
        f"  +{n.received - start:6.1f}s {n.receiver} {n.status} {n.labels.get('alertname')} "
        + " ".join(f"{k}={v}" for k, v in sorted(n.labels.items()) if k in ("sensor", "chip"))
        for n in sorted(sent, key=lambda n: n.received)
    )


def _ids() -> list[str]:
    return sc.names()


@pytest.mark.parametrize("name", _ids())
def test_scenario(world: World, name: str) -> None:
    run = world.runs[name]
    scenario = run.scenario
    assert scenario.expect or scenario.silent, f"{name}: expects nothing"
    for expectation in scenario.expect:
        pages = {}
        for engine, stack in world.stacks.items():
            remaining = expectation.within - run.player.elapsed()
            try:
                got = stack.webhook.wait_for(
                    max(remaining, 1.0), instance=run.instance, **expectation.matches()
                )
            except AssertionError as exc:
                raise AssertionError(
                    f"{name} on {engine}: {exc}\n" + _pipeline(stack, run.instance)
                ) from None
            if expectation.receiver:
                assert got.receiver == expectation.receiver, f"{engine}: {got}"
            assert got.labels.get("cluster") == "e2e", f"{engine}: {got.labels}"
            assert got.annotations.get("runbook_url", "").endswith(
                f"/{got.labels['alertname']}.md"
            ), f"{engine}: {got.annotations}"
            pages[engine] = got
        _assert_same_page(name, pages)
    if scenario.silent or scenario.inhibited or scenario.still_firing:
        deadline = scenario.duration - run.player.elapsed()
        if deadline > 0:
            time.sleep(deadline)
    for engine, stack in world.stacks.items():
        _assert_held(name, engine, stack, run)
    assert not run.player.errors, run.player.errors


def _assert_same_page(name: str, pages: dict[str, s.Notification]) -> None:
    """The engines page with the same labels and the same summary (descriptions carry
    $value, which two engines sampling the same host a second apart read differently)."""
    if len(pages) < 2:
        return
    (first, a), (second, b) = list(pages.items())[:2]
    assert a.labels == b.labels, f"{name}: labels differ: {first} {a.labels} {second} {b.labels}"
    assert a.annotations.get("summary") == b.annotations.get("summary"), (
        f"{name}: summaries differ: {first} {a.annotations} {second} {b.annotations}"
    )


def _assert_held(name: str, engine: str, stack: s.Stack, run: Run) -> None:
    """The scenario's silences, inhibitions and still-firing alerts, on one engine."""
    where = f"{name} on {engine}"
    scenario = run.scenario
    for silence in scenario.silent:
        noise = stack.webhook.firing(instance=run.instance, **silence)
        assert not noise, (
            f"{where}: unexpected notifications: "
            + ", ".join(f"{n.receiver}:{n.labels.get('alertname')}{n.labels}" for n in noise)
            + "\nthe storage probe's counters:\n"
            + _probe_counters(stack, run.instance)
        )
    for matchers in scenario.inhibited:
        # Firing in the engine, held back by Alertmanager, and never sent.
        active = stack.alertmanager_alerts(instance=run.instance, **matchers)
        assert active, f"{where}: {matchers} never reached Alertmanager"
        for alert in active:
            assert alert["status"]["inhibitedBy"], f"{where}: not inhibited: {alert}"
        leaked = stack.webhook.firing(instance=run.instance, **matchers)
        assert not leaked, f"{where}: sent uninhibited: {leaked}\n" + _timeline(stack, run)
    for matchers in scenario.still_firing:
        # Paging from the first notification to the end, never resolved in between.
        active = stack.alertmanager_alerts(instance=run.instance, **matchers)
        assert active, f"{where}: {matchers} no longer active"
        assert all(a["status"]["state"] == "active" for a in active), f"{where}: {active}"
        resolved = stack.webhook.received("resolved", instance=run.instance, **matchers)
        assert not resolved, f"{where}: {matchers} resolved: {resolved}"


def test_victoriametrics_installed() -> None:
    """The VictoriaMetrics half of the scenarios runs only where Debian's
    victoria-metrics is installed: say so instead of passing in silence."""
    absent = s.engine_missing(s.VICTORIAMETRICS)
    if absent:
        missing(f"{absent}: not installed (Debian package victoria-metrics)")


def test_a_failing_stop_does_not_leave_the_other_daemons_running(tmp_path: Path) -> None:
    """The teardown's own contract (CI once kept 13 daemons, their probes and 16 tree
    players running for the rest of the suite after one daemon's slow stop)."""
    stopped: list[str] = []

    class Part:
        def __init__(self, name: str, fails: bool = False) -> None:
            self.name, self.fails = name, fails

        def stop(self, timeout: float = 0.0) -> None:
            stopped.append(self.name)
            if self.fails:
                raise subprocess.TimeoutExpired("nodeslo serve", timeout)

    runs = [
        Run(None, Part(f"player{i}"), Part(f"daemon{i}", fails=i == 0), tmp_path / str(i))  # type: ignore[arg-type]
        for i in range(3)
    ]
    with pytest.raises(subprocess.TimeoutExpired):
        _stop_all(runs)
    assert stopped == ["player0", "daemon0", "player1", "daemon1", "player2", "daemon2"]
