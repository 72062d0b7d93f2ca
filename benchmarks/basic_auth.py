"""What basic auth costs a scrape: one bcrypt verification against a cache hit.

    .venv/bin/python benchmarks/basic_auth.py [--costs 10,12] [--repeat 20]

Baseline for the ratio: `BasicAuth.check` with the credential cached (what every scrape
after the first pays, until the entry expires after 5 minutes).
"""

from __future__ import annotations

import argparse
import base64
import statistics
import time

import bcrypt

from _common import machine
from nodeslo.web.auth import BasicAuth


def timed(call: object, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()  # type: ignore[operator]
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--costs", default="10,12")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    password = b"a scrape password"
    header = "Basic " + base64.b64encode(b"prometheus:" + password).decode()
    for cost in (int(c) for c in args.costs.split(",")):
        hashed = bcrypt.hashpw(password, bcrypt.gensalt(rounds=cost))
        users = {"prometheus": hashed}
        auth = BasicAuth()
        assert auth.check(users, header)
        cached = timed(lambda: auth.check(users, header), args.repeat * 100)  # noqa: B023
        verify = timed(lambda: bcrypt.checkpw(password, hashed), args.repeat)  # noqa: B023
        print(
            f"  cost {cost:2d}: bcrypt verify p50 {verify * 1e3:8.2f} ms   "
            f"cached check p50 {cached * 1e6:6.2f} us (baseline)   "
            f"ratio {verify / cached:8.0f}x   bcrypt calls {auth.bcrypt_calls}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
