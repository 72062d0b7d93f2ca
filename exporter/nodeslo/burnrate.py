"""Multiwindow, multi-burn-rate alerting: the Google SRE Workbook's table, as data.

Each tier pages (or tickets) when both its long and its short window burn the error
budget faster than `factor`. The factor is derived from the share of the budget a
tier may spend within its long window, so a 28-day period still means 2 % / 5 % /
10 % / 10 % of the budget, not the 30-day numbers:

    factor = budget_share * period / long_window

(30d: 14.4, 6, 3, 1 - the Workbook's table). The short window is long / 12, which
makes an alert reset soon after the burn stops. `for` follows pyrra's choices for the
slower tiers: it waits out a single bad scrape without delaying a page by much. The
fastest tier has none, as in the Workbook and sloth: with a 99 % objective a total
failure takes 8.6 minutes to cross 14.4 % of the hour, so a `for` of 2m would put the
page past 10 minutes, and its 5m window already needs 43 seconds of total failure.
"""

from __future__ import annotations

from dataclasses import dataclass

from nodeslo.units import prom_duration

MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0


@dataclass(frozen=True)
class Tier:
    severity: str
    long_seconds: float
    short_seconds: float
    budget_share: float
    for_seconds: float

    @property
    def long(self) -> str:
        return prom_duration(self.long_seconds)

    @property
    def short(self) -> str:
        return prom_duration(self.short_seconds)

    def factor(self, period_seconds: float) -> float:
        """The burn rate that spends `budget_share` of the budget in one long window."""
        return round(self.budget_share * period_seconds / self.long_seconds, 6)


TIERS = (
    Tier("critical", 1 * HOUR, 5 * MINUTE, 0.02, 0.0),
    Tier("critical", 6 * HOUR, 30 * MINUTE, 0.05, 15 * MINUTE),
    Tier("warning", 1 * DAY, 2 * HOUR, 0.10, 1 * HOUR),
    Tier("warning", 3 * DAY, 6 * HOUR, 0.10, 3 * HOUR),
)

# Every window an error ratio is recorded for, shortest first.
WINDOWS_SECONDS = tuple(sorted({t.long_seconds for t in TIERS} | {t.short_seconds for t in TIERS}))
LONGEST_WINDOW_SECONDS = max(WINDOWS_SECONDS)


def highest_factor(period_seconds: float) -> float:
    return max(t.factor(period_seconds) for t in TIERS)
