"""What may be asked of the BMC: the whitelist, the request builders, the errors.

The daemon, the privileged helper, the recorder and the replay share one vocabulary:
a `Request` is (NetFn, command, LUN, data) for the BMC on the system interface.
Only read-only commands are on the whitelist, each with the exact request length it
takes, so no request can reach a command that writes or controls anything (Chassis
Control, Set Sensor Thresholds, Clear SEL, Set SEL Time, Master Write-Read...) nor be
bridged to another controller (Send Message). The two reserve commands change no
state the operator sees: a reservation only guards partial reads against concurrent
repository changes, and is needed to read records in pieces.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Protocol

NETFN_CHASSIS = 0x00
NETFN_SENSOR = 0x04
NETFN_APP = 0x06
NETFN_STORAGE = 0x0A

GET_CHASSIS_STATUS = (NETFN_CHASSIS, 0x01)
GET_SENSOR_THRESHOLDS = (NETFN_SENSOR, 0x27)
GET_SENSOR_READING = (NETFN_SENSOR, 0x2D)
GET_DEVICE_ID = (NETFN_APP, 0x01)
GET_SDR_REPOSITORY_INFO = (NETFN_STORAGE, 0x20)
RESERVE_SDR_REPOSITORY = (NETFN_STORAGE, 0x22)
GET_SDR = (NETFN_STORAGE, 0x23)
GET_SEL_INFO = (NETFN_STORAGE, 0x40)
RESERVE_SEL = (NETFN_STORAGE, 0x42)
GET_SEL_ENTRY = (NETFN_STORAGE, 0x43)

# (NetFn, command) -> (name, request data length).
ALLOWED: dict[tuple[int, int], tuple[str, int]] = {
    GET_DEVICE_ID: ("Get Device ID", 0),
    GET_CHASSIS_STATUS: ("Get Chassis Status", 0),
    GET_SDR_REPOSITORY_INFO: ("Get SDR Repository Info", 0),
    RESERVE_SDR_REPOSITORY: ("Reserve SDR Repository", 0),
    GET_SDR: ("Get SDR", 6),
    GET_SENSOR_READING: ("Get Sensor Reading", 1),
    GET_SENSOR_THRESHOLDS: ("Get Sensor Thresholds", 1),
    GET_SEL_INFO: ("Get SEL Info", 0),
    RESERVE_SEL: ("Reserve SEL", 0),
    GET_SEL_ENTRY: ("Get SEL Entry", 6),
}
MAX_REQUEST_DATA = max(length for _, length in ALLOWED.values())
# The kernel's IPMI_MAX_MSG_LENGTH: completion code and response data.
MAX_RESPONSE = 272

# Completion codes (table 5-2) the client acts on.
CC_INVALID_COMMAND = 0xC1
CC_RESERVATION_CANCELLED = 0xC5
CC_CANNOT_RETURN_BYTES = 0xCA
CC_NOT_PRESENT = 0xCB

_GET_RECORD = struct.Struct("<HHBB")  # reservation ID, record ID, offset, bytes to read


class IpmiError(Exception):
    """The BMC could not be asked; the message names the command."""


class Timeout(IpmiError):
    """No answer within the command timeout."""


class Refused(IpmiError):
    """The request is outside the whitelist."""


class NoDevice(IpmiError):
    """There is no IPMI device node (no BMC, or its driver is not loaded)."""


class CompletionCode(IpmiError):
    """The BMC answered with a non-zero completion code."""

    def __init__(self, code: int, what: str) -> None:
        super().__init__(f"{what}: completion code {code:#04x}")
        self.code = code


@dataclass(frozen=True)
class Request:
    netfn: int
    cmd: int
    data: bytes = b""
    lun: int = 0

    def describe(self) -> str:
        known = ALLOWED.get((self.netfn, self.cmd))
        name = known[0] if known else f"NetFn {self.netfn:#04x} command {self.cmd:#04x}"
        return name


def check(request: Request) -> None:
    """Refused unless the request is on the whitelist with its exact length."""
    known = ALLOWED.get((request.netfn, request.cmd))
    if known is None:
        raise Refused(f"{request.describe()}: not on the whitelist")
    name, length = known
    if len(request.data) != length:
        raise Refused(f"{name}: {len(request.data)} data bytes, the command takes {length}")
    if not 0 <= request.lun <= 3:
        raise Refused(f"{name}: LUN {request.lun} out of range")


class Transport(Protocol):
    """Where answers come from: the device via the helper, the device, a recording."""

    def call(self, request: Request, timeout: float) -> bytes:
        """The response: completion code and data. Timeout, Refused, NoDevice, IpmiError."""
        ...

    def close(self) -> None: ...


def get_device_id() -> Request:
    return Request(*GET_DEVICE_ID)


def get_chassis_status() -> Request:
    return Request(*GET_CHASSIS_STATUS)


def get_sdr_repository_info() -> Request:
    return Request(*GET_SDR_REPOSITORY_INFO)


def reserve_sdr_repository() -> Request:
    return Request(*RESERVE_SDR_REPOSITORY)


def get_sdr(reservation: int, record_id: int, offset: int, count: int) -> Request:
    return Request(*GET_SDR, _GET_RECORD.pack(reservation, record_id, offset, count))


def get_sensor_reading(number: int, lun: int = 0) -> Request:
    return Request(*GET_SENSOR_READING, bytes([number]), lun)


def get_sensor_thresholds(number: int, lun: int = 0) -> Request:
    return Request(*GET_SENSOR_THRESHOLDS, bytes([number]), lun)


def get_sel_info() -> Request:
    return Request(*GET_SEL_INFO)


def reserve_sel() -> Request:
    return Request(*RESERVE_SEL)


def get_sel_entry(reservation: int, record_id: int) -> Request:
    """A whole entry (offset 0, FFh bytes): no reservation needed except by some BMCs."""
    return Request(*GET_SEL_ENTRY, _GET_RECORD.pack(reservation, record_id, 0, 0xFF))
