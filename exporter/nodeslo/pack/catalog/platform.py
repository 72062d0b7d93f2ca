"""Platform: kernel tuning drift, firmware and microcode versions."""

from __future__ import annotations

from nodeslo.pack import promql
from nodeslo.pack.catalog.base import (
    ON,
    WARNING,
    HealthAlert,
    Recording,
    template_filter,
)
from nodeslo.profile import Profile

# `setting` values of nodeslo_tuning_compliant that dedicated alerts already cover.
TUNING_ALERTED_ELSEWHERE = "deep_cstates|governor|turbo"


def parameters(profile: Profile) -> dict[str, str]:
    h = profile.health.firmware
    host_group_sel, host_group_args = template_filter(h.host_group_by)
    return {
        "tuning_elsewhere": TUNING_ALERTED_ELSEWHERE,
        "host_components": promql.quote("|".join(h.host_components)),
        "host_components_text": ", ".join(h.host_components),
        "host_group_": "".join(f"{name}, " for name in h.host_group_by),
        "host_group_sel_": host_group_sel,
        "host_group_args_": host_group_args,
    }


def durations(profile: Profile) -> dict[str, float]:
    return {"firmware_skew_for": profile.health.firmware.skew_for_seconds}


RECORDINGS: tuple[Recording, ...] = ()

ALERTS = (
    HealthAlert(
        name="KernelTuningDrift",
        group="platform",
        severity=WARNING,
        expr="""
nodeslo_tuning_info{setting!~"${tuning_elsewhere}"}
and on (${by}, setting)
(nodeslo_tuning_compliant == 0)
""",
        for_=900,
        summary="Kernel setting {{ $labels.setting }} drifted " + ON,
        description="{{ $labels.setting }} is {{ $labels.actual }}; the profile expects "
        "{{ $labels.expected }}. Something (a package update, a tuned profile, an "
        "operator) changed it.",
        threshold="a setting differs from the profile's `tuning:`",
        source=("nodeslo_tuning_info", "nodeslo_tuning_compliant"),
        held_through_gaps=True,
    ),
    HealthAlert(
        name="FirmwareSkew",
        group="platform",
        severity=WARNING,
        expr="""
count by (${fleet_}model) (
  count by (${fleet_}model, firmware) (nodeslo_nvme_info)
) > 1
""",
        for_="firmware_skew_for",
        labels=(("component", "nvme"),),
        summary="{{ $value }} firmware versions run on {{ $labels.model }} NVMe drives",
        description="Drives of the same model {{ $labels.model }} run {{ $value }} firmware "
        "versions (threshold: 1): "
        '{{ range printf "count by (firmware) (nodeslo_nvme_info{${fleet_sel_}model=%q})" '
        '${fleet_args_}$labels.model | query | sortByLabel "firmware" }}'
        "{{ .Labels.firmware }} on {{ .Value }}; {{ end }}"
        "bring them all to the validated version.",
        threshold="more than one firmware version per drive model",
        source=("nodeslo_nvme_info",),
        held_through_gaps=True,
    ),
    HealthAlert(
        name="FirmwareSkew",
        group="platform",
        severity=WARNING,
        expr="""
count by (${fleet_}${host_group_}component) (
  count by (${fleet_}${host_group_}component, version) (
    nodeslo_firmware_info{component=~${host_components}}
  )
) > 1
""",
        for_="firmware_skew_for",
        summary="{{ $value }} {{ $labels.component }} versions run across hosts",
        description="Hosts run {{ $value }} versions of {{ $labels.component }} (threshold: "
        "1, compared: ${host_components_text}): "
        '{{ range printf "count by (version) (nodeslo_firmware_info{${fleet_sel_}'
        '${host_group_sel_}component=%q})" ${fleet_args_}${host_group_args_}$labels.component '
        '| query | sortByLabel "version" }}'
        "{{ .Labels.version }} on {{ .Value }}; {{ end }}roll the validated version out "
        "everywhere.",
        threshold="more than one version of ${host_components_text} across hosts",
        source=("nodeslo_firmware_info",),
        held_through_gaps=True,
    ),
    HealthAlert(
        name="FirmwareSkew",
        group="platform",
        severity=WARNING,
        expr="nodeslo_firmware_microcode_revisions > 1",
        for_="firmware_skew_for",
        labels=(("component", "microcode"),),
        summary="CPUs " + ON + " run {{ $value }} microcode revisions",
        description="The CPUs of this host run {{ $value }} different microcode revisions "
        "(threshold: 1): a microcode update was applied to some CPUs only.",
        threshold="more than one microcode revision within a host",
        source=("nodeslo_firmware_microcode_revisions",),
        held_through_gaps=True,
    ),
    HealthAlert(
        name="CPUMicrocodeOutdated",
        group="platform",
        severity=WARNING,
        expr="nodeslo_firmware_microcode_outdated == 1",
        for_=3600,
        summary="CPU microcode " + ON + " is outdated",
        description="The kernel knows a newer microcode for this CPU than the one loaded "
        "(nodeslo_firmware_microcode_outdated = {{ $value }}, threshold: 0). Vendors fix "
        "scheduling-latency and power-state bugs in microcode.",
        threshold="the kernel reports old microcode",
        source=("nodeslo_firmware_microcode_outdated",),
        held_through_gaps=True,
    ),
)
