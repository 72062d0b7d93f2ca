"""OCP Datacenter NVMe SSD "SMART / Health Information Extended" log page (LID C0h).

C0h is in the vendor-specific range, so a drive that does not follow the OCP
specification may put any layout there. The page identifies itself by the Log Page
GUID in its last 16 bytes; a page with another GUID is not decoded (`NotOcpPage`).
On drives that implement several vendor pages at C0h, the OCP one is selected by the
UUID index of the OCP UUID in Identify UUID List (CNS 17h); see `identify.py`.
Layout as nvme-cli's plugins/ocp/ocp-smart-extended-log.h.
"""

from __future__ import annotations

from dataclasses import dataclass

from nodeslo.nvme.layout import Field, Layout, PageError

LID = 0xC0
SIZE = 512
# GUID AFD514C97C6F4F9CA4F2BFEA2810AFC5, stored little-endian at bytes 511:496.
GUID = bytes.fromhex("C5AF1028EABFF2A49C4F6F7CC914D5AF")
GUID_OFFSET = 496

LAYOUT = Layout(
    "OCP SMART / Health Extended log (C0h)",
    SIZE,
    (
        Field(0, 16, "physical_media_units_written", "bytes"),
        Field(16, 16, "physical_media_units_read", "bytes"),
        Field(32, 6, "bad_user_nand_blocks_raw", "count"),
        Field(38, 2, "bad_user_nand_blocks_normalized", "percent"),
        Field(40, 6, "bad_system_nand_blocks_raw", "count"),
        Field(46, 2, "bad_system_nand_blocks_normalized", "percent"),
        Field(48, 8, "xor_recovery_count", "count"),
        Field(56, 8, "uncorrectable_read_errors", "count"),
        Field(64, 8, "soft_ecc_errors", "count"),
        Field(72, 4, "end_to_end_detected_errors", "count"),
        Field(76, 4, "end_to_end_corrected_errors", "count"),
        Field(80, 1, "system_data_percent_used", "percent"),
        Field(81, 7, "refresh_counts", "count"),
        Field(88, 4, "user_data_erase_count_max", "count"),
        Field(92, 4, "user_data_erase_count_min", "count"),
        Field(96, 1, "thermal_throttling_events", "count"),
        Field(97, 1, "thermal_throttling_status", "bitmask"),
        Field(104, 8, "pcie_correctable_errors", "count"),
        Field(112, 4, "incomplete_shutdowns", "count"),
        Field(120, 1, "percent_free_blocks", "percent"),
        Field(128, 2, "capacitor_health", "percent"),
        Field(494, 2, "log_page_version", "version"),
        Field(GUID_OFFSET, 16, "log_page_guid", "raw"),
    ),
)


class NotOcpPage(PageError):
    """A C0h page whose GUID is not the OCP one: a vendor layout, ignored."""


@dataclass(frozen=True)
class OcpExtendedLog:
    physical_media_units_written: int  # bytes
    physical_media_units_read: int  # bytes
    bad_user_nand_blocks_raw: int
    bad_user_nand_blocks_normalized: int
    bad_system_nand_blocks_raw: int
    bad_system_nand_blocks_normalized: int
    xor_recovery_count: int
    uncorrectable_read_errors: int
    soft_ecc_errors: int
    end_to_end_detected_errors: int
    end_to_end_corrected_errors: int
    system_data_percent_used: int
    refresh_counts: int
    user_data_erase_count_max: int
    user_data_erase_count_min: int
    thermal_throttling_events: int
    thermal_throttling_status: int
    pcie_correctable_errors: int
    incomplete_shutdowns: int
    percent_free_blocks: int
    capacitor_health: int
    log_page_version: int
    log_page_guid: bytes


LAYOUT.check_matches(OcpExtendedLog)


def is_ocp(data: bytes) -> bool:
    return len(data) == SIZE and data[GUID_OFFSET : GUID_OFFSET + 16] == GUID


def decode(data: bytes) -> OcpExtendedLog:
    """Decode an OCP C0h page: PageError on a bad length, NotOcpPage on another GUID."""
    LAYOUT.check(data)
    if not is_ocp(data):
        guid = data[GUID_OFFSET:][::-1].hex().upper()
        raise NotOcpPage(f"{LAYOUT.name}: log page GUID {guid} is not the OCP GUID")
    return OcpExtendedLog(*LAYOUT.values(data))
