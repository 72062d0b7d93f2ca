"""argparse value types shared by the CLI and collector flags: bad values exit 2 with usage."""

from __future__ import annotations

import argparse
import re

from nodeslo.units import parse_duration


def regex(text: str) -> re.Pattern[str]:
    try:
        return re.compile(text)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"invalid regular expression {text!r}: {exc}") from None


def as_pattern(value: object) -> re.Pattern[str] | None:
    """A regex option's value: compiled by argparse, or a plain string set by a test."""
    if isinstance(value, re.Pattern):
        return value
    return re.compile(value) if isinstance(value, str) and value else None


def duration(text: str) -> float:
    """'10ms', '60s', '5m' -> seconds, strictly positive."""
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive duration: {text!r}")
    return seconds


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value
