"""Exchanges with a BMC kept in a file, and played back: `nodeslo bmc dump`, test data,
and `--collector.bmc.replay FILE`.

A recording is JSON: {"format": "nodeslo-ipmi-recording", "version": 1, "exchanges":
[{"netfn", "cmd", "lun", "request" (hex), "response" (hex, completion code first)}]}.
Playing back answers a request with the last response recorded for the same request
bytes; a request never recorded is an error, as a BMC that does not answer would be.
The file is read again when it changes, so a test can swap a healthy BMC for a failing
one under a running daemon.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

from nodeslo.ipmi.requests import IpmiError, Request, Transport, check

FORMAT = "nodeslo-ipmi-recording"
VERSION = 1
Key = tuple[int, int, int, bytes]


def _key(request: Request) -> Key:
    return (request.netfn, request.cmd, request.lun, request.data)


class RecordingTransport:
    """Passes requests to `inner` and keeps every answered exchange."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.exchanges: list[tuple[Request, bytes]] = []
        self._lock = threading.Lock()

    def call(self, request: Request, timeout: float) -> bytes:
        response = self.inner.call(request, timeout)
        with self._lock:
            self.exchanges.append((request, response))
        return response

    def close(self) -> None:
        self.inner.close()

    def document(self) -> dict[str, Any]:
        with self._lock:
            exchanges = list(self.exchanges)
        return {
            "format": FORMAT,
            "version": VERSION,
            "exchanges": [
                {
                    "netfn": r.netfn,
                    "cmd": r.cmd,
                    "lun": r.lun,
                    "request": r.data.hex(),
                    "response": response.hex(),
                }
                for r, response in exchanges
            ],
        }

    def save(self, path: str) -> None:
        """Write atomically, so a replay reading the same path never sees half a file."""
        staging = f"{path}.partial"
        with open(staging, "w") as f:
            json.dump(self.document(), f, indent=1)
            f.write("\n")
        os.replace(staging, path)


class ReplayError(ValueError):
    """A recording that cannot be used; the message names the file."""


def parse(document: Any, source: str) -> dict[Key, bytes]:
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ReplayError(f"{source}: not a {FORMAT} file")
    if document.get("version") != VERSION:
        raise ReplayError(f"{source}: version {document.get('version')!r}, expected {VERSION}")
    answers: dict[Key, bytes] = {}
    exchanges = document.get("exchanges")
    if not isinstance(exchanges, list):
        raise ReplayError(f"{source}: exchanges must be a list")
    for number, exchange in enumerate(exchanges):
        try:
            request = Request(
                int(exchange["netfn"]),
                int(exchange["cmd"]),
                bytes.fromhex(exchange["request"]),
                int(exchange["lun"]),
            )
            response = bytes.fromhex(exchange["response"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ReplayError(f"{source}: exchange {number}: {exc}") from None
        answers[_key(request)] = response
    return answers


class ReplayTransport:
    """Answers from a recording file, re-read when its modification time changes."""

    # Between checks of the file's modification time.
    CHECK_INTERVAL = 1.0

    def __init__(self, path: str) -> None:
        self.path = path
        self._answers: dict[Key, bytes] = {}
        self._mtime: int | None = None
        self._checked = 0.0
        self._lock = threading.Lock()

    def _load(self) -> dict[Key, bytes]:
        now = time.monotonic()
        if self._mtime is not None and now - self._checked < self.CHECK_INTERVAL:
            return self._answers
        self._checked = now
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except OSError as exc:
            raise IpmiError(f"{self.path}: {exc.strerror}") from None
        if mtime != self._mtime:
            try:
                with open(self.path) as f:
                    document = json.load(f)
            except (OSError, ValueError) as exc:
                raise IpmiError(f"{self.path}: {exc}") from None
            try:
                self._answers = parse(document, self.path)
            except ReplayError as exc:
                raise IpmiError(str(exc)) from None
            self._mtime = mtime
        return self._answers

    def call(self, request: Request, timeout: float) -> bytes:
        check(request)  # the same whitelist as the device path
        with self._lock:
            answers = self._load()
        response = answers.get(_key(request))
        if response is None:
            raise IpmiError(f"{request.describe()} {request.data.hex()}: not in {self.path}")
        return response

    def close(self) -> None:
        pass
