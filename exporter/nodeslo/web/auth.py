"""Basic auth against bcrypt hashes, and the toolkit's request rate limiter.

bcrypt at cost 10 takes tens of milliseconds of CPU; paying it on every scrape would
make the exporter's cost depend on its password. Verified credentials are cached, the
way exporter-toolkit caches them, with these properties:

- the key is an HMAC (per-process random key) over user, stored hash and password:
  the password itself is never kept, a different password never hits, and a changed
  hash in the file (password rotation) misses at once;
- a removed user fails before the cache is consulted;
- good and bad credentials live in separate caches, so a flood of bad passwords never
  pushes the scraper's verified login out; a good entry's CACHE_TTL_SECONDS restarts
  on each use, each cache holds at most CACHE_SIZE;
- a client with more than MAX_FAILURES failed logins within FAILURE_WINDOW_SECONDS
  gets no bcrypt (answered 401 at once, until the window passes) unless its
  credentials hit the good cache: one address guessing cannot hold the bcrypt lock;
- bcrypt runs one at a time, so a flood of bad passwords costs at most one core;
- an unknown user is checked against a decoy hash of the highest configured cost, so
  response time does not reveal which users exist.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Mapping

import bcrypt

CACHE_TTL_SECONDS = 300.0
CACHE_SIZE = 256
MAX_FAILURES = 10
FAILURE_WINDOW_SECONDS = 10.0
# Clients whose failures are counted; past this many, the oldest are forgotten.
MAX_TRACKED_CLIENTS = 4096
# bcrypt only reads 72 bytes; bcrypt >= 5 refuses longer passwords rather than
# truncating them, and so does nodeslo (a 401, never a match on a prefix).
MAX_PASSWORD_BYTES = 72
_DECOY_PASSWORD = b"nodeslo decoy password"


def parse_basic(header: str | None) -> tuple[bytes, bytes] | None:
    """`Authorization: Basic base64(user:password)` -> (user, password), else None."""
    if not header:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    return user, password


class _Cache:
    """digest -> expiry, bounded: past `size`, expired entries go, then the oldest."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: dict[bytes, float] = {}

    def hit(self, digest: bytes, now: float, extend: float | None = None) -> bool:
        expiry = self.entries.get(digest)
        if expiry is None or expiry <= now:
            return False
        if extend is not None:
            self.entries[digest] = now + extend
        return True

    def add(self, digest: bytes, expiry: float, now: float) -> None:
        if len(self.entries) >= self.size:
            for stale in [k for k, e in self.entries.items() if e <= now]:
                del self.entries[stale]
            while len(self.entries) >= self.size:
                del self.entries[next(iter(self.entries))]  # the oldest entry
        self.entries[digest] = expiry


class BasicAuth:
    def __init__(self, ttl: float = CACHE_TTL_SECONDS, size: int = CACHE_SIZE) -> None:
        self._ttl = ttl
        self._key = secrets.token_bytes(32)
        self._good = _Cache(size)
        self._bad = _Cache(size)
        self._failures: dict[str, tuple[int, float]] = {}  # client -> (count, window start)
        self._cache_lock = threading.Lock()
        self._bcrypt_lock = threading.Lock()
        self._decoys: dict[int, bytes] = {}
        self.bcrypt_calls = 0  # for tests and benchmarks: how often the cost was paid
        self.throttled = 0  # failed logins refused without bcrypt

    def check(self, users: Mapping[str, bytes], header: str | None, client: str = "") -> bool:
        credentials = parse_basic(header)
        if credentials is None:
            return False
        user_bytes, password = credentials
        try:
            user = user_bytes.decode("utf-8")
        except UnicodeDecodeError:
            return False
        stored = users.get(user)
        hashed = stored if stored is not None else self._decoy(users)
        key = hmac.new(self._key, b"\0".join((user_bytes, hashed, password)), hashlib.sha256)
        digest = key.digest()
        now = time.monotonic()
        with self._cache_lock:
            if self._good.hit(digest, now, extend=self._ttl):
                return stored is not None
            if self._bad.hit(digest, now) or self._throttled(client, now):
                return False
        ok = self._verify(password, hashed) and stored is not None
        with self._cache_lock:
            (self._good if ok else self._bad).add(digest, now + self._ttl, now)
            if not ok:
                self._failed(client, now)
        return ok

    def _throttled(self, client: str, now: float) -> bool:
        count, start = self._failures.get(client, (0, now))
        if now - start >= FAILURE_WINDOW_SECONDS:
            self._failures.pop(client, None)
            return False
        if count >= MAX_FAILURES:
            self.throttled += 1
            return True
        return False

    def _failed(self, client: str, now: float) -> None:
        count, start = self._failures.pop(client, (0, now))
        if now - start >= FAILURE_WINDOW_SECONDS:
            count, start = 0, now
        if len(self._failures) >= MAX_TRACKED_CLIENTS:
            del self._failures[next(iter(self._failures))]
        self._failures[client] = (count + 1, start)

    def _verify(self, password: bytes, hashed: bytes) -> bool:
        if len(password) > MAX_PASSWORD_BYTES:
            return False
        with self._bcrypt_lock:
            self.bcrypt_calls += 1
            try:
                return bcrypt.checkpw(password, hashed)
            except ValueError:
                return False

    def _decoy(self, users: Mapping[str, bytes]) -> bytes:
        cost = max((int(h[4:6]) for h in users.values()), default=10)
        with self._cache_lock:
            decoy = self._decoys.get(cost)
        if decoy is None:
            decoy = bcrypt.hashpw(_DECOY_PASSWORD, bcrypt.gensalt(rounds=cost))
            with self._cache_lock:
                self._decoys[cost] = decoy
        return decoy


class RateLimiter:
    """A token bucket like Go's rate.Limiter: one token per interval, `burst` at most."""

    def __init__(self, interval_seconds: float, burst: int) -> None:
        self.interval_seconds = interval_seconds
        self.burst = burst
        self._tokens = float(burst)
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def allow(self) -> bool:
        with self._lock:
            now = time.monotonic()
            refill = (now - self._last) / self.interval_seconds
            self._tokens = min(float(self.burst), self._tokens + refill)
            self._last = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False
