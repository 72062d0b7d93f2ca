"""Reading scraped exposition text: samples as a dict, volatile families filtered out."""

from __future__ import annotations

import re
from collections.abc import Iterable

from prometheus_client.parser import text_string_to_metric_families

# Families whose values depend on the machine or the moment, not on the fixture.
VOLATILE = (
    re.compile(r"^process_"),
    re.compile(r"^python_"),
    re.compile(r"^nodeslo_collector_duration_seconds"),
    re.compile(r"^nodeslo_build_info"),
    # Its sha256 changes with every edit of the shipped profile, which no collector owns.
    re.compile(r"^nodeslo_profile_info"),
    re.compile(r"^nodeslo_profile_last_reload_success_timestamp_seconds"),
    re.compile(r"^nodeslo_nvme_smart_last_success_timestamp_seconds"),
    re.compile(r"^nodeslo_bmc_last_success_timestamp_seconds"),
    re.compile(r"^nodeslo_bmc_poll_duration_seconds"),
)

Sample = tuple[str, tuple[tuple[str, str], ...]]


def samples(text: str) -> dict[Sample, float]:
    """{(name, sorted labels): value} for every sample in an exposition."""
    out: dict[Sample, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in out, f"duplicate sample {key}"
            out[key] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    """The one sample of `name` whose labels include `labels`."""
    matches = [
        v
        for (n, ls), v in samples(text).items()
        if n == name and all(dict(ls).get(k) == want for k, want in labels.items())
    ]
    assert len(matches) == 1, f"{name}{labels}: {len(matches)} samples"
    return matches[0]


def names(text: str) -> set[str]:
    return {name for name, _ in samples(text)}


def stable(text: str, drop: Iterable[re.Pattern[str]] = VOLATILE) -> str:
    """The exposition without volatile families, sorted by family, for golden files."""
    blocks: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines():
        if line.startswith("# HELP "):
            current = line.split()[2]
        if any(p.search(current) for p in drop):
            continue
        blocks.setdefault(current, []).append(line)
    return "".join("\n".join(blocks[name]) + "\n" for name in sorted(blocks))
