"""A BMC in Python for the poller's logic tests: it answers the whitelisted commands from
a model (SDR records as bytes, raw readings, SEL entries) the test changes, counts what
it was asked, and can misbehave on demand (hang, cancel reservations, refuse big reads).

The bytes it speaks are the real ones: records come from tests/support/bmc_chassis.py
or a recording of the simulated BMC, so the decoders are exercised as with a real BMC.
"""

from __future__ import annotations

import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from nodeslo.ipmi import requests
from nodeslo.ipmi.requests import Request, Timeout

OK = 0x00


@dataclass
class FakeBmc:
    records: list[bytes]
    readings: dict[int, bytes]  # sensor number -> response data after the completion code
    thresholds: dict[int, bytes] = field(default_factory=dict)
    sel: list[bytes] = field(default_factory=list)  # 16-byte entries
    device_id: bytes = bytes.fromhex("00030908029f91120002 0f".replace(" ", ""))
    chassis: bytes = bytes([0x01, 0x00, 0x00, 0x00])
    addition_timestamp: int = 0
    erase_timestamp: int = 0
    # Misbehaviour switches.
    hang: bool = False
    max_read: int = 0xFF  # larger partial SDR reads get CAh
    cancel_reservation_once: set[int] = field(default_factory=set)  # record IDs
    wants_sel_reservation: bool = False
    calls: Counter[tuple[int, int]] = field(default_factory=Counter)
    log: list[Request] = field(default_factory=list)
    _reservation: int = 1
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.sel = list(self.sel)

    # -- the model -----------------------------------------------------------------------

    def add_sel(self, sensor_type: int, number: int, offset: int, deassert: bool = False) -> None:
        record_id = (struct.unpack_from("<H", self.sel[-1])[0] + 1) if self.sel else 1
        direction = (0x80 if deassert else 0x00) | 0x6F
        self.sel.append(
            struct.pack(
                "<HBIHBBBBBBB",
                record_id,
                0x02,
                0,
                0x20,
                0x04,
                sensor_type,
                number,
                direction,
                offset,
                0xFF,
                0xFF,
            )
        )
        self.addition_timestamp += 1

    def clear_sel(self) -> None:
        self.sel = []
        self.erase_timestamp += 1

    # -- the transport -------------------------------------------------------------------

    def call(self, request: Request, timeout: float) -> bytes:
        requests.check(request)
        with self._lock:
            self.calls[(request.netfn, request.cmd)] += 1
            self.log.append(request)
        if self.hang:
            time.sleep(min(timeout, 0.05))
            raise Timeout(f"{request.describe()}: no answer")
        handler = {
            requests.GET_DEVICE_ID: lambda: _ok(self.device_id),
            requests.GET_CHASSIS_STATUS: lambda: _ok(self.chassis),
            requests.GET_SDR_REPOSITORY_INFO: self._sdr_info,
            requests.RESERVE_SDR_REPOSITORY: self._reserve,
            requests.GET_SDR: lambda: self._get_sdr(request.data),
            requests.GET_SENSOR_READING: lambda: self._reading(request.data[0]),
            requests.GET_SENSOR_THRESHOLDS: lambda: self._thresholds(request.data[0]),
            requests.GET_SEL_INFO: self._sel_info,
            requests.RESERVE_SEL: self._reserve,
            requests.GET_SEL_ENTRY: lambda: self._sel_entry(request.data),
        }[(request.netfn, request.cmd)]
        response: bytes = handler()
        return response

    def close(self) -> None:
        pass

    def _sdr_info(self) -> bytes:
        return _ok(struct.pack(
            "<BHHIIB", 0x51, len(self.records), 0x1000, self.addition_timestamp,
            self.erase_timestamp, 0x02,
        ))  # fmt: skip

    def _reserve(self) -> bytes:
        self._reservation += 1
        return _ok(struct.pack("<H", self._reservation))

    def _record_ids(self) -> list[int]:
        return [struct.unpack_from("<H", r)[0] or i + 1 for i, r in enumerate(self.records)]

    def _get_sdr(self, data: bytes) -> bytes:
        reservation, record_id, offset, count = struct.unpack("<HHBB", data)
        ids = self._record_ids()
        index = 0 if record_id == 0 else ids.index(record_id) if record_id in ids else -1
        if index < 0:
            return bytes([requests.CC_NOT_PRESENT])
        real_id = ids[index]
        if offset and reservation != self._reservation:
            return bytes([requests.CC_RESERVATION_CANCELLED])
        if offset and real_id in self.cancel_reservation_once:
            self.cancel_reservation_once.discard(real_id)
            self._reservation += 1  # as if the repository changed
            return bytes([requests.CC_RESERVATION_CANCELLED])
        if count != 0xFF and count > self.max_read:
            return bytes([requests.CC_CANNOT_RETURN_BYTES])
        record = struct.pack("<H", real_id) + self.records[index][2:]
        next_id = ids[index + 1] if index + 1 < len(ids) else 0xFFFF
        return _ok(struct.pack("<H", next_id) + record[offset : offset + count])

    def _reading(self, number: int) -> bytes:
        data = self.readings.get(number)
        return bytes([requests.CC_NOT_PRESENT]) if data is None else _ok(data)

    def _thresholds(self, number: int) -> bytes:
        data = self.thresholds.get(number)
        return bytes([0xCD]) if data is None else _ok(data)  # CDh: illegal for this sensor

    def _sel_info(self) -> bytes:
        return _ok(struct.pack(
            "<BHHIIB", 0x51, len(self.sel), 16 * (1000 - len(self.sel)),
            self.addition_timestamp, self.erase_timestamp, 0x0A,
        ))  # fmt: skip

    def _sel_entry(self, data: bytes) -> bytes:
        reservation, record_id, _offset, _count = struct.unpack("<HHBB", data)
        if self.wants_sel_reservation and reservation != self._reservation:
            return bytes([requests.CC_RESERVATION_CANCELLED])
        ids = [struct.unpack_from("<H", e)[0] for e in self.sel]
        if not ids:
            return bytes([requests.CC_NOT_PRESENT])
        if record_id == 0x0000:
            index = 0
        elif record_id == 0xFFFF:
            index = len(ids) - 1
        elif record_id in ids:
            index = ids.index(record_id)
        else:
            return bytes([requests.CC_NOT_PRESENT])
        next_id = ids[index + 1] if index + 1 < len(ids) else 0xFFFF
        return _ok(struct.pack("<H", next_id) + self.sel[index])


def _ok(data: bytes) -> bytes:
    return bytes([OK]) + data
