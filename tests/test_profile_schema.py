"""The profile's JSON Schema: built from the validator's tables, accepts every profile
the project ships or tests with, and rejects what the validator rejects for a key alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from nodeslo.profile import ProfileError, load_profile, schema, validate

REPO = Path(__file__).resolve().parents[1]
PROFILES = sorted(
    [
        *(REPO / "exporter" / "nodeslo" / "profiles").glob("*.yaml"),
        *(REPO / "tests" / "scenarios" / "profiles").glob("*.yaml"),
    ]
)


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    committed = json.loads((REPO / schema.PATH).read_text())
    jsonschema.Draft7Validator.check_schema(committed)
    return jsonschema.Draft7Validator(committed)


def test_the_committed_schema_is_what_generate_writes() -> None:
    ((path, text),) = schema.schema_files(None)
    assert path == schema.PATH
    assert (REPO / path).read_text() == text, "run `nodeslo generate` and commit"


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.name)
def test_every_shipped_and_test_profile_is_valid(
    validator: jsonschema.Draft7Validator, path: Path
) -> None:
    assert len(PROFILES) >= 2
    errors = [e.message for e in validator.iter_errors(yaml.safe_load(path.read_text()))]
    assert errors == []


def test_a_site_override_is_valid(validator: jsonschema.Draft7Validator, tmp_path: Path) -> None:
    site = {
        "extends": "process-management",
        "profile": "site",
        "slos": {"scheduler-wakeup-latency": None},
        "health": {"cpu": {"temperature_max": {"intel": 88}}, "nvme": {"wear_warning": "70%"}},
        "tuning": {"governor": None, "isolated_cpus": "2-63", "sysctl": {"vm.swappiness": 1}},
        "probes": {"storage": {"targets": ["/var/lib/nodeslo"], "file_size": "64MiB"}},
        "alerting": {"prometheus_selector": False, "labels": {"team": "infra"}},
    }
    (tmp_path / "site.yaml").write_text(yaml.safe_dump(site))
    load_profile(str(tmp_path / "site.yaml"))  # the validator agrees
    assert list(validator.iter_errors(site)) == []


# Broken profiles: each is rejected by the validator (ProfileError) and by the schema.
BROKEN: dict[str, dict[str, Any]] = {
    "unknown top-level key": {"alerts": {}},
    "unknown nested key (a typo)": {"health": {"nvme": {"wear_warnig": 0.8}}},
    "unknown probe": {"probes": {"latency": {}}},
    "wrong type: number as list": {"period": [30]},
    "wrong type: boolean as string": {"probes": {"wakeup": {"enabled": "yes"}}},
    "wrong type: section as scalar": {"health": 3},
    "bad enum: governor": {"tuning": {"governor": "turbo"}},
    "bad enum: wake-up policy": {"probes": {"wakeup": {"policy": "rr"}}},
    "bad enum: SLO probe": {"slos": {"storage-write-latency": {"probe": "network"}}},
    "bad duration": {"period": "30 days"},
    "objective over 100%": {"slos": {"storage-write-latency": {"objective": "150%"}}},
    "SLO name with capitals": {"slos": {"Storage": {"objective": "99%"}}},
    "SLI of two kinds": {
        "slos": {
            "storage-write-latency": {
                "sli": {"latency": {"histogram": "h", "threshold": "1ms"}, "time": {}}
            }
        }
    },
    "histogram named with its suffix": {
        "slos": {"storage-write-latency": {"sli": {"latency": {"histogram": "x_bucket"}}}}
    },
    "reserved alert label": {"alerting": {"labels": {"severity": "low"}}},
    "bad label name": {"alerting": {"instance_labels": ["bad-label"]}},
    "no instance label": {"alerting": {"instance_labels": []}},
    "fleet share over 100%": {"alerting": {"fleet_regression": {"share": 1.5}}},
    "fleet severity info": {"alerting": {"fleet_regression": {"severities": ["info"]}}},
    "fleet key typo": {"alerting": {"fleet_regression": {"min_host": 3}}},
    "relative probe target": {"probes": {"storage": {"targets": ["var/lib"]}}},
    "probe rate over the limit": {"probes": {"storage": {"rate": 5000}}},
    "psu count zero": {"health": {"power": {"psu_count": 0}}},
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_profile_is_rejected_by_both(
    validator: jsonschema.Draft7Validator, tmp_path: Path, case: str
) -> None:
    doc = {"extends": "process-management", "profile": "broken", **BROKEN[case]}
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ProfileError):
        load_profile(str(path))
    assert list(validator.iter_errors(doc)), f"the schema accepts: {case}"


def test_a_profile_must_name_itself_or_extend_one(validator: jsonschema.Draft7Validator) -> None:
    assert list(validator.iter_errors({"period": "30d"}))
    assert not list(validator.iter_errors({"profile": "mine"}))


def test_every_validator_key_is_in_the_schema() -> None:
    """The schema walks the validator's tables: a key there is a property here."""
    props = schema.profile_schema()["properties"]
    assert set(props) == {*validate.TOP_LEVEL, "extends"}
    health = props["health"]["anyOf"][0]["properties"]
    assert set(health) == set(validate.HEALTH_PARTS)
    nvme = health["nvme"]["anyOf"][0]["properties"]
    assert set(nvme) == set(validate._NVME)
    tuning = props["tuning"]["anyOf"][0]["properties"]
    assert set(tuning) == set(validate._TUNING)


def test_a_parser_without_a_schema_fails_generation(monkeypatch: pytest.MonkeyPatch) -> None:
    without = dict(validate.PARSER_SCHEMAS)
    del without[validate._NVME["wear_warning"][1]]
    monkeypatch.setattr(validate, "PARSER_SCHEMAS", without)
    with pytest.raises(ValueError, match=r"health\.nvme\.wear_warning"):
        schema.profile_schema()
