"""hwmon chips and their sensors, shared by the thermal (temp, fan) and power collectors.

Sources (Documentation/hwmon/sysfs-interface.rst): `/sys/class/hwmon/hwmonN` links to
the chip's directory; `name` is the driver's chip name, `device` links to the device
the chip belongs to; sensors are `<type><index>_<item>` files: `temp1_input` (m°C),
`temp1_max`, `temp1_crit`, `temp1_label`, `fan1_input` (RPM), `power1_input` /
`power1_average` (µW). Drivers from before the hwmon class kept all of it in
`device/`, which is read when the chip directory has no `name`.

`chip` is derived from the device path (`platform_coretemp_0`,
`0000:00_0000:00:18_3`), as node_exporter does: hwmonN numbers follow module load
order and change across reboots, device paths do not. `chip_name` is `name`.

The catalogue (chips, sensors, labels, thresholds) is read once per change of the
set of chips: each `chips()` call lists /sys/class/hwmon and reads its links, nothing
else. Thresholds (max, crit) are static for most drivers, and reading them on some
(nvme) costs an admin command to the device per read.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from nodeslo.paths import Roots
from nodeslo.readers import ReadError, list_dir, read_int, read_text

MILLI = 1000.0
MICRO = 1e6

_SENSOR_FILE = re.compile(r"^(temp|fan|power)(\d+)_(input|average)$")
_INVALID_ID_CHARS = re.compile(r"[^a-z0-9:_]")


@dataclass(frozen=True)
class Sensor:
    kind: str  # temp, fan, power
    sensor: str  # temp1, fan2, power1
    label: str  # <sensor>_label, else the sensor name
    value_path: str  # the file read on every scrape
    max: float | None = None  # base units (°C) where the driver offers it
    crit: float | None = None


@dataclass(frozen=True)
class Chip:
    chip: str
    chip_name: str
    path: str
    sensors: tuple[Sensor, ...]


def clean_id(text: str) -> str:
    """A device name as a stable label value: lower case, [a-z0-9:_] only."""
    return _INVALID_ID_CHARS.sub("_", text.lower()).strip("_")


def device_path(chip_dir: str) -> str | None:
    """Where the chip's `device` link points, without resolving the whole path: one
    readlink (the chip directory itself is already resolved). None without a device."""
    link = f"{chip_dir}/device"
    try:
        target = os.readlink(link)
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # a directory (container copy of sysfs)
            return os.path.realpath(link)
        return None
    return os.path.normpath(os.path.join(chip_dir, target))


def chip_id(chip_dir: str, name: str) -> str:
    """`<parent>_<device>` of the device the chip belongs to; else its name; else hwmonN."""
    device = device_path(chip_dir)
    if device is not None:
        dev_name = clean_id(os.path.basename(device))
        dev_type = clean_id(os.path.basename(os.path.dirname(device)))
        if dev_type and dev_name:
            return f"{dev_type}_{dev_name}"
        if dev_name:
            return dev_name
    return clean_id(name) or clean_id(os.path.basename(chip_dir))


def scan_chip(chip_dir: str, kinds: frozenset[str], errors: list[ReadError]) -> Chip | None:
    """One chip's sensors of the given kinds, with their static attributes."""
    base = chip_dir
    try:
        files = set(list_dir(base))
        if "name" not in files and "device" in files:
            # A driver from before the hwmon class: its attributes are on the device.
            device_files = set(list_dir(f"{chip_dir}/device"))
            if "name" in device_files:
                base, files = f"{chip_dir}/device", device_files
    except ReadError as exc:
        errors.append(exc)
        return None
    if not files:
        return None  # vanished while being scanned
    name = _text(f"{base}/name", errors) if "name" in files else None
    if name is None:
        errors.append(ReadError(f"{chip_dir}/name", "hwmon chip has no name attribute"))
    sensors: dict[tuple[str, int], Sensor] = {}
    for file in sorted(files):
        match = _SENSOR_FILE.match(file)
        if match is None or match.group(1) not in kinds:
            continue
        kind, index, item = match.group(1), int(match.group(2)), match.group(3)
        sensor = f"{kind}{index}"
        # powerN_input is instantaneous; powerN_average (ACPI power meter) only if no input.
        if item == "average" and f"{sensor}_input" in files:
            continue
        label = _text(f"{base}/{sensor}_label", errors) if f"{sensor}_label" in files else None
        limits: list[float | None] = []
        for limit in ("max", "crit"):
            raw = None
            if kind == "temp" and f"{sensor}_{limit}" in files:
                raw = _int(f"{base}/{sensor}_{limit}", errors)
            limits.append(None if raw is None else raw / MILLI)
        sensors[(kind, index)] = Sensor(
            kind, sensor, label or sensor, f"{base}/{file}", limits[0], limits[1]
        )
    return Chip(
        chip=chip_id(chip_dir, name or ""),
        chip_name=name or "",
        path=chip_dir,
        sensors=tuple(sensors[key] for key in sorted(sensors)),
    )


def _text(path: str, errors: list[ReadError]) -> str | None:
    try:
        return read_text(path)
    except ReadError as exc:
        errors.append(exc)
        return None


def _int(path: str, errors: list[ReadError]) -> int | None:
    try:
        return read_int(path)
    except ReadError as exc:
        errors.append(exc)
        return None


def unique_ids(chips: Iterable[Chip]) -> list[Chip]:
    """Two chips of one device (rare) would collide: suffix the later ones with hwmonN."""
    seen: set[str] = set()
    out = []
    for chip in chips:
        unique = chip
        if chip.chip in seen:
            suffixed = f"{chip.chip}_{os.path.basename(chip.path)}"
            unique = Chip(suffixed, chip.chip_name, chip.path, chip.sensors)
        seen.add(unique.chip)
        out.append(unique)
    return out


class HwmonCatalog:
    """The chips under /sys/class/hwmon with sensors of `kinds`, rescanned on change."""

    def __init__(
        self,
        roots: Roots,
        kinds: Iterable[str],
        cache_static: bool = True,
        exclude_names: re.Pattern[str] | None = None,
    ) -> None:
        self._class_dir = roots.sys("class", "hwmon")
        self._kinds = frozenset(kinds)
        self._exclude_names = exclude_names
        self._cache_static = cache_static
        self._key: tuple[tuple[str, str], ...] | None = None
        self._chips: list[Chip] = []
        self.stale = False

    def _excluded(self, chip_dir: str) -> bool:
        """Decided on `name` alone, before any sensor or threshold file is read."""
        if self._exclude_names is None:
            return False
        try:
            name = read_text(f"{chip_dir}/name")
        except ReadError:
            return False  # scan_chip reports the unreadable name
        return name is not None and self._exclude_names.search(name) is not None

    def _device_set(self) -> tuple[tuple[str, str], ...]:
        entries = []
        for name in list_dir(self._class_dir):
            path = f"{self._class_dir}/{name}"
            try:
                target = os.readlink(path)
            except OSError:
                target = ""  # not a link (a container bind mount): the name must do
            entries.append((name, target))
        return tuple(entries)

    def chips(self, errors: list[ReadError]) -> list[Chip]:
        """The chips; scan errors of a rescan are appended to `errors`."""
        key = self._device_set()
        if key != self._key or self.stale or not self._cache_static:
            found = []
            for name, target in key:
                # The chip's real directory, so its relative `device` link resolves.
                chip_dir = os.path.normpath(os.path.join(self._class_dir, target or name))
                if self._excluded(chip_dir):
                    continue
                chip = scan_chip(chip_dir, self._kinds, errors)
                if chip is not None and chip.sensors:
                    found.append(chip)
            self._chips = unique_ids(found)
            self._key = key
            self.stale = False
        return self._chips
