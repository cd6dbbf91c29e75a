"""Rulesets: validated documents with stable rule ids, protected rules and a content hash."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rules.errors import RulesetError
from rules.schema import load_ruleset, parse_ruleset, seed_ruleset_path


def test_the_seed_ruleset_is_valid_and_names_its_rules():
    ruleset = load_ruleset(path=seed_ruleset_path())
    assert {"hazmat", "capacity", "no-dropship-next-day"} <= set(ruleset.rule_ids())
    assert ruleset.protected == ("hazmat",)


def test_equal_documents_hash_equal_and_any_change_changes_the_hash():
    seed = load_ruleset(path=seed_ruleset_path())
    document = seed.model_dump(mode="json")
    assert parse_ruleset(document=document, origin="copy").content_hash() == seed.content_hash()
    document["scoring"]["split_penalty"] = 5.0
    assert parse_ruleset(document=document, origin="changed").content_hash() != seed.content_hash()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["split"].update(max_shipments=9), "split.max_shipments"),
        (lambda d: d.update(protected=["no-such-rule"]), "protected names unknown rule"),
        (lambda d: d["eligibility"]["max_risk_by_tier"].update(plus=1.5), "eligibility.max_risk_by_tier.plus"),
        (lambda d: d["eligibility"]["node_types"].append({"id": "hazmat", "node_type": "store"}), "unique"),
        (lambda d: d.update(colour="blue"), "colour"),
    ],
)
def test_a_bad_ruleset_is_refused_naming_the_field(change, message):
    document = load_ruleset(path=seed_ruleset_path()).model_dump(mode="json")
    change(document)
    with pytest.raises(RulesetError, match=message):
        parse_ruleset(document=document, origin="test.yaml")


def test_rules_validate_exits_2_naming_the_file_and_field(tmp_path):
    bad = tmp_path / "rules.yaml"
    bad.write_text("name: x\nsplit: {max_shipments: 9}\n")
    result = subprocess.run(
        [sys.executable, "-m", "serving", "rules", "validate", str(bad)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert str(bad) in result.stderr and "split.max_shipments" in result.stderr
    assert "Traceback" not in result.stderr
    good = subprocess.run(
        [sys.executable, "-m", "serving", "rules", "validate"], capture_output=True, text=True, timeout=120
    )
    assert good.returncode == 0 and "content hash" in good.stdout
