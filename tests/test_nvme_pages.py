"""NVMe page decoders and the admin command bytes, against hand-built pages.

Every field of each page gets its own distinct value (128-bit counters with both
halves set), so a decoder reading from a wrong offset or width cannot pass.
"""

from __future__ import annotations

import errno
import json
import os
import uuid
from pathlib import Path

import pytest

from fixtures import nvme as enc
from nodeslo.nvme import identify, ioctl, ocp, smart
from nodeslo.nvme.cli import decode_page, guess_page
from nodeslo.nvme.layout import PageError
from support import daemon as d

BIG = 2**64


def distinct_smart() -> tuple[bytes, dict[str, object]]:
    counters = {
        "data_units_read": BIG * 3 + 11,
        "data_units_written": BIG * 5 + 12,
        "host_read_commands": BIG * 7 + 13,
        "host_write_commands": BIG * 11 + 14,
        "busy_minutes": BIG * 13 + 15,
        "power_cycles": BIG * 17 + 16,
        "power_on_hours": BIG * 19 + 17,
        "unsafe_shutdowns": BIG * 23 + 18,
        "media_errors": BIG * 29 + 19,
        "error_log_entries": 2**127 + 20,
    }
    page = enc.smart_page(
        critical_warning=0x2A,
        composite_kelvin=0x0143,
        available_spare=91,
        spare_threshold=7,
        percentage_used=203,
        endurance_group_warning=0x05,
        warning_temp_minutes=0x01020304,
        critical_temp_minutes=0x05060708,
        sensors_kelvin=(301, 302, 303, 304, 305, 306, 307, 308),
        tmt_transitions=(0x11111111, 0x22222222),
        tmt_seconds=(0x33333333, 0x44444444),
        **counters,
    )
    expected = {
        "critical_warning": 0x2A,
        "composite_temperature_kelvin": 0x0143,
        "available_spare_percent": 91,
        "available_spare_threshold_percent": 7,
        "percentage_used": 203,
        "endurance_group_critical_warning": 0x05,
        "data_units_read": counters["data_units_read"],
        "data_units_written": counters["data_units_written"],
        "host_read_commands": counters["host_read_commands"],
        "host_write_commands": counters["host_write_commands"],
        "controller_busy_minutes": counters["busy_minutes"],
        "power_cycles": counters["power_cycles"],
        "power_on_hours": counters["power_on_hours"],
        "unsafe_shutdowns": counters["unsafe_shutdowns"],
        "media_errors": counters["media_errors"],
        "error_log_entries": counters["error_log_entries"],
        "warning_temperature_minutes": 0x01020304,
        "critical_temperature_minutes": 0x05060708,
        "temperature_sensors_kelvin": (301, 302, 303, 304, 305, 306, 307, 308),
        "thermal_management_temp1_transitions": 0x11111111,
        "thermal_management_temp2_transitions": 0x22222222,
        "thermal_management_temp1_seconds": 0x33333333,
        "thermal_management_temp2_seconds": 0x44444444,
    }
    return page, expected


def test_smart_every_field_at_its_offset() -> None:
    page, expected = distinct_smart()
    decoded = smart.decode(page)
    assert {k: getattr(decoded, k) for k in expected} == expected
    # Every dataclass field is covered by the expectation.
    assert set(expected) == set(decoded.__dataclass_fields__)


def test_smart_counters_keep_all_128_bits() -> None:
    page = enc.smart_page(data_units_written=2**128 - 1, media_errors=BIG)
    decoded = smart.decode(page)
    assert decoded.data_units_written == 2**128 - 1
    assert decoded.media_errors == BIG


def test_smart_warning_flags() -> None:
    decoded = smart.decode(enc.smart_page(critical_warning=0b100101))
    assert decoded.warning_flags() == {
        "spare": True,
        "temperature": False,
        "reliability": True,
        "read_only": False,
        "volatile_backup": False,
        "pmr_read_only": True,
    }


@pytest.mark.parametrize(
    ("decoder", "size"),
    [
        (smart.decode, 512),
        (ocp.decode, 512),
        (identify.decode_controller, 4096),
        (identify.decode_uuid_list, 4096),
    ],
)
@pytest.mark.parametrize("length", [0, 1, 511, 513, 4095])
def test_wrong_length_is_a_clear_error(decoder, size: int, length: int) -> None:  # type: ignore[no-untyped-def]
    if length == size:
        return
    with pytest.raises(PageError, match=f"expected exactly {size} bytes") as info:
        decoder(bytes(length))
    assert ("empty" if length == 0 else f"{length} bytes") in str(info.value)


def distinct_ocp() -> tuple[bytes, dict[str, object]]:
    page = enc.ocp_page(
        media_written=BIG * 2 + 1,
        media_read=BIG * 3 + 2,
        bad_user_raw=0x0A0B0C0D0E0F,
        bad_user_normalized=0x1112,
        bad_system_raw=0x212223242526,
        bad_system_normalized=0x3132,
        xor_recovery=0x4142434445464748,
        uncorrectable_reads=0x5152535455565758,
        soft_ecc=0x6162636465666768,
        e2e_detected=0x71727374,
        e2e_corrected=0x75767778,
        system_data_used=81,
        refresh_counts=0x01020304050607,
        erase_max=0x0A0A0B0B,
        erase_min=0x0C0C0D0D,
        throttling_events=97,
        throttling_status=0x12,
        pcie_correctable=0x1B1C1D1E1F202122,
        incomplete_shutdowns=0x23242526,
        free_blocks=42,
        capacitor_health=0x2728,
        version=0x0004,
    )
    expected = {
        "physical_media_units_written": BIG * 2 + 1,
        "physical_media_units_read": BIG * 3 + 2,
        "bad_user_nand_blocks_raw": 0x0A0B0C0D0E0F,
        "bad_user_nand_blocks_normalized": 0x1112,
        "bad_system_nand_blocks_raw": 0x212223242526,
        "bad_system_nand_blocks_normalized": 0x3132,
        "xor_recovery_count": 0x4142434445464748,
        "uncorrectable_read_errors": 0x5152535455565758,
        "soft_ecc_errors": 0x6162636465666768,
        "end_to_end_detected_errors": 0x71727374,
        "end_to_end_corrected_errors": 0x75767778,
        "system_data_percent_used": 81,
        "refresh_counts": 0x01020304050607,
        "user_data_erase_count_max": 0x0A0A0B0B,
        "user_data_erase_count_min": 0x0C0C0D0D,
        "thermal_throttling_events": 97,
        "thermal_throttling_status": 0x12,
        "pcie_correctable_errors": 0x1B1C1D1E1F202122,
        "incomplete_shutdowns": 0x23242526,
        "percent_free_blocks": 42,
        "capacitor_health": 0x2728,
        "log_page_version": 0x0004,
        "log_page_guid": enc.OCP_GUID,
    }
    return page, expected


def test_ocp_every_field_at_its_offset() -> None:
    page, expected = distinct_ocp()
    decoded = ocp.decode(page)
    assert {k: getattr(decoded, k) for k in expected} == expected
    assert set(expected) == set(decoded.__dataclass_fields__)


def test_ocp_guid_is_checked() -> None:
    page, _ = distinct_ocp()
    assert ocp.is_ocp(page)
    for position in (496, 503, 511):  # first, middle and last GUID byte
        other = bytearray(page)
        other[position] ^= 0x01
        assert not ocp.is_ocp(bytes(other))
        with pytest.raises(ocp.NotOcpPage, match="is not the OCP GUID"):
            ocp.decode(bytes(other))
    # The GUID as the OCP specification prints it.
    assert ocp.GUID[::-1].hex().upper() == "AFD514C97C6F4F9CA4F2BFEA2810AFC5"


def test_identify_controller_fields() -> None:
    page = enc.identify_controller_page(
        vid=0x1234,
        ssvid=0x5678,
        serial="S1234567890123456789",
        model="A model name that fills all 40 bytes!!!!",
        firmware="FW01",
        cntlid=0x0A0B,
        version=0x00020001,
        ctratt=0x00000200,
        lpa=0x1E,
        wctemp=346,
        cctemp=358,
    )
    decoded = identify.decode_controller(page)
    assert decoded == identify.IdentifyController(
        pci_vendor_id=0x1234,
        pci_subsystem_vendor_id=0x5678,
        serial="S1234567890123456789",
        model="A model name that fills all 40 bytes!!!!",
        firmware="FW01",  # space padding stripped
        controller_id=0x0A0B,
        version=0x00020001,
        controller_attributes=0x200,
        log_page_attributes=0x1E,
        warning_temperature_kelvin=346,
        critical_temperature_kelvin=358,
    )
    assert decoded.uuid_list_supported
    assert not identify.decode_controller(enc.identify_controller_page()).uuid_list_supported


def test_identify_strings_padded_with_nuls() -> None:
    page = bytearray(enc.identify_controller_page(serial="X"))
    page[4:24] = b"SER1" + bytes(16)
    assert identify.decode_controller(bytes(page)).serial == "SER1"


def test_uuid_list_and_ocp_index() -> None:
    other = uuid.UUID("00112233-4455-6677-8899-aabbccddeeff")
    uuids = identify.decode_uuid_list(enc.identify_uuid_list_page([other, enc.OCP_UUID]))
    assert uuids == (other, enc.OCP_UUID)
    assert identify.ocp_uuid_index(uuids) == 2
    assert identify.ocp_uuid_index((other,)) == 0
    assert identify.decode_uuid_list(bytes(4096)) == ()


# -- the admin command -----------------------------------------------------------------


def test_ioctl_request_number_from_the_uapi_macro() -> None:
    # _IOWR('N', 0x41, struct nvme_admin_cmd): dir 3 (read|write) << 30, size << 16,
    # type 'N' << 8, nr.
    expected = (3 << 30) | (72 << 16) | (ord("N") << 8) | 0x41
    assert expected == ioctl.NVME_IOCTL_ADMIN_CMD
    assert ioctl.PASSTHRU.size == 72


def test_get_log_page_smart_bytes() -> None:
    cmd = ioctl.get_log_page(0x02, 512)
    raw = cmd.pack(addr=0x1122334455667788, timeout_ms=5000)
    expected = bytes.fromhex(
        "02"  # opcode: Get Log Page
        "00"  # flags
        "0000"  # rsvd1
        "ffffffff"  # nsid: the whole controller
        "00000000" "00000000"  # cdw2, cdw3
        "0000000000000000"  # metadata
        "8877665544332211"  # addr, little-endian
        "00000000"  # metadata_len
        "00020000"  # data_len = 512
        "02007f00"  # cdw10 = 0x007F0002: LID 02h, NUMDL 127 (128 dwords - 1)
        "00000000"  # cdw11: NUMDU 0
        "00000000" "00000000"  # cdw12, cdw13: offset 0
        "00000000"  # cdw14: UUID index 0
        "00000000"  # cdw15
        "88130000"  # timeout_ms = 5000
        "00000000"  # result
    )  # fmt: skip
    assert raw == expected


def test_get_log_page_ocp_with_uuid_index_bytes() -> None:
    raw = ioctl.get_log_page(0xC0, 512, uuid_index=2).pack(addr=0x1000, timeout_ms=0)
    assert raw[0] == 0x02
    assert raw[40:44] == bytes.fromhex("c0007f00")  # cdw10 = 0x007F00C0
    assert raw[56:60] == bytes.fromhex("02000000")  # cdw14 bits 6:0 = 2


def test_identify_bytes() -> None:
    raw = ioctl.identify(0x01).pack(addr=0xDEADBEEF, timeout_ms=1000)
    assert raw[0] == 0x06  # opcode: Identify
    assert raw[4:8] == bytes(4)  # nsid 0
    assert raw[24:32] == bytes.fromhex("efbeadde00000000")
    assert raw[36:40] == bytes.fromhex("00100000")  # 4096 bytes
    assert raw[40:44] == bytes.fromhex("01000000")  # CNS 01h
    assert ioctl.identify(0x17).pack(0, 0)[40:44] == bytes.fromhex("17000000")


def test_long_log_page_splits_numd() -> None:
    cmd = ioctl.get_log_page(0x02, 4 * 0x12345)
    assert cmd.cdw10 == 0x2344 << 16 | 0x02
    assert cmd.cdw11 == 0x1


@pytest.mark.parametrize("length", [0, 3, 510])
def test_bad_log_length_refused(length: int) -> None:
    with pytest.raises(ValueError, match="multiple of 4"):
        ioctl.get_log_page(0x02, length)


def test_submit_on_a_non_nvme_device_fails_cleanly() -> None:
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        with pytest.raises(OSError) as info:
            ioctl.submit(fd, ioctl.get_log_page(0x02, 512), 1000)
    finally:
        os.close(fd)
    assert info.value.errno == errno.ENOTTY


def test_status_error_classification() -> None:
    assert ioctl.NvmeStatusError(0x4002, "x").unsupported  # DNR + Invalid Field
    assert ioctl.NvmeStatusError(0x0109, "x").unsupported  # Invalid Log Page
    assert not ioctl.NvmeStatusError(0x0006, "x").unsupported  # Internal Error


# -- nodeslo nvme decode -----------------------------------------------------------------


def test_decode_cli_prints_json(tmp_path: Path) -> None:
    page, _ = distinct_smart()
    path = tmp_path / "log-02.bin"
    path.write_bytes(page)
    result = d.run_cli("nvme", "decode", str(path))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["page"] == "smart"
    assert out["fields"]["error_log_entries"] == 2**127 + 20  # exact, not a float
    assert out["fields"]["temperature_sensors_kelvin"] == list(range(301, 309))


def test_decode_cli_ocp_and_errors(tmp_path: Path) -> None:
    page, _ = distinct_ocp()
    (tmp_path / "c0.bin").write_bytes(page)
    result = d.run_cli("nvme", "decode", str(tmp_path / "c0.bin"), "--page", "ocp-c0")
    assert result.returncode == 0, result.stderr
    fields = json.loads(result.stdout)["fields"]
    assert fields["log_page_guid"] == "AFD514C97C6F4F9CA4F2BFEA2810AFC5"

    (tmp_path / "short.bin").write_bytes(b"\x00" * 100)
    result = d.run_cli("nvme", "decode", str(tmp_path / "short.bin"), "--page", "smart")
    assert result.returncode == 1
    assert "short.bin" in result.stderr and "expected exactly 512 bytes" in result.stderr

    result = d.run_cli("nvme", "decode", str(tmp_path / "absent.bin"))
    assert result.returncode == 1 and "absent.bin" in result.stderr


def test_guess_page() -> None:
    page, _ = distinct_ocp()
    assert guess_page("x/log-c0.bin", bytes(512)) == "ocp-c0"
    assert guess_page("capture.bin", page) == "ocp-c0"
    assert guess_page("capture.bin", bytes(4096)) == "identify-ctrl"
    assert guess_page("capture.bin", bytes(512)) == "smart"
    assert decode_page("identify-uuid", enc.identify_uuid_list_page([enc.OCP_UUID])) == {
        "uuids": [str(enc.OCP_UUID)],
        "ocp_uuid_index": 1,
    }
