"""Scoring and routing rules name canonical values; `leadrelay check` refuses the others."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from leadrelay.handoff.routing import RoutingConfig
from leadrelay.handoff.rulevalues import rule_value_problems
from leadrelay.handoff.scoring import ScoringConfig
from tests.test_cli import run


def _problems(
    scoring: dict[str, Any] | None = None, routing: dict[str, Any] | None = None
) -> list[Any]:
    return rule_value_problems(
        ScoringConfig.model_validate(scoring or {}), RoutingConfig.model_validate(routing or {})
    )


def _segment(industries: list[str]) -> dict[str, Any]:
    return {
        "rules": [
            {"kind": "segment", "name": "verticals", "industries": industries, "owners": ["a@x.io"]}
        ]
    }


def _field_rule(field: str, values: list[str]) -> dict[str, Any]:
    rule = {"name": "r", "category": "fit", "points": 5, "when": {"field": field, "in": values}}
    return {"rules": [rule]}


@pytest.mark.parametrize(
    ("scoring", "routing", "value", "nearest"),
    [
        (
            {"lists": {"target_industries": ["Computer Software"]}},
            None,
            "Computer Software",
            "software",
        ),
        ({"lists": {"target_industries": ["Softwear"]}}, None, "Softwear", "software"),
        (None, _segment(["Technology"]), "Technology", "software"),
        (None, _segment(["banks"]), "banks", "banking"),
        (_field_rule("stage", ["opportunities"]), None, "opportunities", "opportunity"),
        (_field_rule("salutation", ["Mrs."]), None, "Mrs.", "mrs"),
        (_field_rule("country", ["Deutschland"]), None, "Deutschland", "DE"),
    ],
)
def test_a_value_outside_the_enum_is_named_with_the_nearest_canonical_values(
    scoring: dict[str, Any] | None, routing: dict[str, Any] | None, value: str, nearest: str
) -> None:
    [problem] = _problems(scoring, routing)
    assert problem.value == value
    assert problem.nearest[0] == nearest
    assert repr(value) in str(problem) and nearest in str(problem)


@pytest.mark.parametrize(
    ("scoring", "routing"),
    [
        ({"lists": {"target_industries": ["software", "Banking", "it_services"]}}, None),
        (None, _segment(["healthcare", "life_sciences"])),
        (_field_rule("country", ["DE", "us"]), None),
        (_field_rule("job_title", ["Anything Goes"]), None),
        (
            None,
            {
                "rules": [
                    {
                        "kind": "territory",
                        "name": "dach",
                        "countries": ["Germany", "AT"],
                        "owners": ["a@x.io"],
                    }
                ]
            },
        ),
    ],
)
def test_canonical_values_in_any_case_pass(
    scoring: dict[str, Any] | None, routing: dict[str, Any] | None
) -> None:
    assert _problems(scoring, routing) == []


def test_the_problem_names_the_rule_and_its_list() -> None:
    [problem] = _problems({"lists": {"target_industries": ["Fintech Stuff"]}})
    assert problem.rule == "scoring rule 'target industry' (list target_industries)"
    assert problem.field == "industry"


def _project(tmp_path: Path, target_industries: str) -> Path:
    config = tmp_path / "leadrelay.toml"
    config.write_text(f"[scoring.lists]\ntarget_industries = {target_industries}\n")
    return config


def test_check_refuses_a_rule_naming_a_system_spelling(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _project(tmp_path, '["Computer Software"]')
    code, out, _err = run(["check", "--config", str(config), "--offline", "--json"], capsys)
    report = json.loads(out)
    assert code == 1
    [refused] = [c for c in report["checks"] if not c["ok"]]
    assert refused["subject"] == "rules"
    assert "'target industry'" in refused["detail"]
    assert "'Computer Software'" in refused["detail"]
    assert "nearest: software" in refused["detail"]


def test_check_passes_canonical_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _project(tmp_path, '["software"]')
    assert run(["check", "--config", str(config), "--offline", "--json"], capsys)[0] == 0
