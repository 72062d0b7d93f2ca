"""The BMC as a sequence of whitelisted commands: identity, the SDR walk, readings, the SEL.

I/O goes through a `Transport` (helper, device, recording); everything decoded here
comes from the pure decoders. Two reads need care:

- the SDR walk reads each record's 5-byte header, then its body in chunks of at most
  16 bytes (what every KCS BMC accepts; a smaller chunk after "cannot return that many
  bytes"), under a reservation. Completion code C5h means the repository changed and
  the reservation was cancelled: reserve again and re-read that record.
- the SEL is read from the entry after the last one already seen; an entry that is no
  longer there (CBh) means the log was cleared, and it is read from the start.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from nodeslo.ipmi import device, requests, sdr, sel, sensor
from nodeslo.ipmi.layout import DecodeError
from nodeslo.ipmi.requests import (
    CC_CANNOT_RETURN_BYTES,
    CC_INVALID_COMMAND,
    CC_NOT_PRESENT,
    CC_RESERVATION_CANCELLED,
    CompletionCode,
    Request,
    Transport,
)

_NEXT_ID = struct.Struct("<H")
CHUNK = 16
MIN_CHUNK = 4
# Bounds against a BMC that answers nonsense: a walk visits at most this many records,
# a record is re-read at most this many times after losing its reservation.
MAX_RECORDS = 4096
MAX_RESERVATION_RETRIES = 8
# SEL entries read per call: a large backlog is read over several polls.
SEL_BATCH = 256


@dataclass(frozen=True)
class Walk:
    sensors: tuple[sdr.SensorRecord, ...]
    records: int  # SDR records of every type visited
    skipped: tuple[str, ...]  # records that could not be decoded, with the reason


class Bmc:
    def __init__(self, transport: Transport, timeout: float) -> None:
        self.transport = transport
        self.timeout = timeout

    def call(self, request: Request) -> bytes:
        """The response data after a zero completion code; CompletionCode otherwise."""
        response = self.transport.call(request, self.timeout)
        if not response:
            raise DecodeError(f"{request.describe()}: empty response")
        if response[0]:
            raise CompletionCode(response[0], request.describe())
        return response[1:]

    def device_id(self) -> device.DeviceId:
        return device.decode_device_id(self.call(requests.get_device_id()))

    def chassis_status(self) -> device.ChassisStatus:
        return device.decode_chassis_status(self.call(requests.get_chassis_status()))

    def repository_info(self) -> sdr.RepositoryInfo:
        return sdr.decode_repository_info(self.call(requests.get_sdr_repository_info()))

    def reading(self, record: sdr.SensorRecord) -> sensor.Reading:
        return sensor.decode_reading(
            self.call(requests.get_sensor_reading(record.number, record.lun))
        )

    def thresholds(self, record: sdr.SensorRecord) -> sensor.Thresholds:
        return sensor.decode_thresholds(
            self.call(requests.get_sensor_thresholds(record.number, record.lun))
        )

    def sel_info(self) -> sel.SelInfo:
        return sel.decode_info(self.call(requests.get_sel_info()))

    # -- the SDR walk -------------------------------------------------------------------

    def _reserve(self, reserve: Callable[[], Request]) -> int:
        try:
            data = self.call(reserve())
        except CompletionCode as exc:
            if exc.code == CC_INVALID_COMMAND:  # no reservations: reads go without one
                return 0
            raise
        if len(data) < 2:
            raise DecodeError(f"{reserve().describe()}: {len(data)} bytes, expected 2")
        reservation: int = _NEXT_ID.unpack_from(data)[0]
        return reservation

    def walk_repository(self) -> Walk:
        """Every sensor record in the repository, from the first record to the last."""
        reservation = self._reserve(requests.reserve_sdr_repository)
        chunk = CHUNK
        sensors: list[sdr.SensorRecord] = []
        skipped: list[str] = []
        record_id = 0x0000
        visited: set[int] = set()
        while record_id != 0xFFFF:
            if record_id in visited or len(visited) >= MAX_RECORDS:
                raise DecodeError(f"SDR walk: record {record_id:#06x} again: the chain loops")
            visited.add(record_id)
            for _ in range(MAX_RESERVATION_RETRIES):
                try:
                    next_id, record, chunk = self._read_record(reservation, record_id, chunk)
                    break
                except CompletionCode as exc:
                    if exc.code != CC_RESERVATION_CANCELLED:
                        raise
                    reservation = self._reserve(requests.reserve_sdr_repository)
            else:
                raise DecodeError(f"SDR record {record_id:#06x}: reservation lost every time")
            try:
                sensors.extend(sdr.decode_record(record))
            except DecodeError as exc:
                skipped.append(str(exc))
            record_id = next_id
        return Walk(tuple(sensors), len(visited), tuple(skipped))

    def _read_record(self, reservation: int, record_id: int, chunk: int) -> tuple[int, bytes, int]:
        """(next record ID, the whole record, the chunk size that worked)."""
        next_id, header = self._get_sdr(reservation, record_id, 0, sdr.HEADER.size)
        _, _, length = sdr.decode_header(header)
        record = bytearray(header)
        total = sdr.HEADER.size + length
        while len(record) < total:
            count = min(chunk, total - len(record))
            try:
                _, part = self._get_sdr(reservation, record_id, len(record), count)
            except CompletionCode as exc:
                if exc.code != CC_CANNOT_RETURN_BYTES or chunk <= MIN_CHUNK:
                    raise
                chunk //= 2
                continue
            if not part:
                raise DecodeError(f"SDR record {record_id:#06x}: empty read at {len(record)}")
            record += part[:count]
        return next_id, bytes(record), chunk

    def _get_sdr(
        self, reservation: int, record_id: int, offset: int, count: int
    ) -> tuple[int, bytes]:
        data = self.call(requests.get_sdr(reservation, record_id, offset, count))
        if len(data) < 2:
            raise DecodeError(f"Get SDR {record_id:#06x}: {len(data)} bytes, expected ≥2")
        next_id: int = _NEXT_ID.unpack_from(data)[0]
        return next_id, data[2:]

    # -- the SEL ------------------------------------------------------------------------

    def _get_sel_entry(self, reservation: int, record_id: int) -> tuple[int, bytes]:
        data = self.call(requests.get_sel_entry(reservation, record_id))
        if len(data) < 2 + sel.ENTRY_SIZE:
            raise DecodeError(f"Get SEL Entry {record_id:#06x}: {len(data)} bytes, expected 18")
        next_id: int = _NEXT_ID.unpack_from(data)[0]
        return next_id, data[2 : 2 + sel.ENTRY_SIZE]

    def _sel_entry(self, state: list[int], record_id: int) -> tuple[int, bytes]:
        """Whole entries need no reservation; a BMC that wants one anyway says C5h."""
        try:
            return self._get_sel_entry(state[0], record_id)
        except CompletionCode as exc:
            if exc.code != CC_RESERVATION_CANCELLED:
                raise
        state[0] = self._reserve(requests.reserve_sel)
        return self._get_sel_entry(state[0], record_id)

    def sel_after(self, last_id: int | None) -> SelBatch:
        """Entries after `last_id` (from the first for None), at most SEL_BATCH of them."""
        reservation = [0]
        restarted = False
        if last_id is None:
            record_id = sel.FIRST_ENTRY
        else:
            try:
                record_id, _ = self._sel_entry(reservation, last_id)
            except CompletionCode as exc:
                if exc.code != CC_NOT_PRESENT:
                    raise
                record_id, restarted = sel.FIRST_ENTRY, True  # cleared or wrapped
            if record_id == sel.LAST_ENTRY:
                return SelBatch((), last_id, True)
        entries: list[sel.SelEntry] = []
        last = None if restarted else last_id
        while record_id != sel.LAST_ENTRY:
            if len(entries) >= SEL_BATCH:
                return SelBatch(tuple(entries), last, False)
            try:
                next_id, data = self._sel_entry(reservation, record_id)
            except CompletionCode as exc:
                if exc.code == CC_NOT_PRESENT and record_id == sel.FIRST_ENTRY:
                    break  # an empty log
                raise
            entry = sel.decode_entry(data)
            entries.append(entry)
            last = entry.record_id
            if next_id == record_id:
                break
            record_id = next_id
        return SelBatch(tuple(entries), last, True)


@dataclass(frozen=True)
class SelBatch:
    entries: tuple[sel.SelEntry, ...]
    last_id: int | None  # the last record read (where the next read continues)
    complete: bool  # the end of the log was reached
