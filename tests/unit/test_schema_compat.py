"""The event models stay readable by the consumers of their ``schema_version``."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from schemas import SCHEMA_VERSION
from schemas.baseline import VERSIONED_MODELS, baseline_dir, current_schemas, load_baseline
from schemas.compat import BreakingChange, ChangeKind, breaking_changes


def _kinds_at(changes: list[BreakingChange]) -> set[tuple[str, ChangeKind]]:
    return {(change.path, change.kind) for change in changes}


def _baseline(name: str) -> dict[str, Any]:
    return copy.deepcopy(load_baseline(1)[name])


def test_every_versioned_model_has_a_frozen_baseline_for_the_current_version() -> None:
    frozen = load_baseline(SCHEMA_VERSION)
    assert set(frozen) == set(VERSIONED_MODELS), (
        f"no baseline in {baseline_dir()} for {set(VERSIONED_MODELS) - set(frozen)}: "
        "freeze it with `python -m schemas.baseline`"
    )


@pytest.mark.parametrize("name", sorted(VERSIONED_MODELS))
def test_current_model_does_not_break_its_versions_baseline(name: str) -> None:
    changes = breaking_changes(load_baseline(SCHEMA_VERSION)[name], current_schemas()[name])
    assert changes == [], (
        f"{name} breaks consumers of schema_version {SCHEMA_VERSION}:\n"
        + "\n".join(f"  {change}" for change in changes)
        + "\nKeep the change compatible, or bump SCHEMA_VERSION and freeze a new baseline."
    )


def test_a_removed_required_field_is_caught() -> None:
    old = _baseline("OrderPlaced")
    new = copy.deepcopy(old)
    del new["properties"]["customer_id"]
    new["required"].remove("customer_id")
    assert _kinds_at(breaking_changes(old, new)) == {
        ("customer_id", ChangeKind.REMOVED_REQUIRED_FIELD)
    }


def test_a_retyped_field_is_caught_at_the_top_and_inside_nested_models() -> None:
    old = _baseline("OrderPlaced")
    new = copy.deepcopy(old)
    new["properties"]["sequence"]["type"] = "string"
    new["$defs"]["LineItem"]["properties"]["quantity"]["type"] = "number"
    new["properties"]["occurred_at"].pop("format")  # a timestamp became free text
    changes = breaking_changes(old, new)
    assert _kinds_at(changes) == {
        ("sequence", ChangeKind.RETYPED_FIELD),
        ("items[].quantity", ChangeKind.RETYPED_FIELD),
        ("occurred_at", ChangeKind.RETYPED_FIELD),
    }
    assert "integer -> string" in str(next(c for c in changes if c.path == "sequence"))


def test_a_retyped_field_inside_a_union_alternative_is_caught() -> None:
    old = _baseline("OrderProgress")
    new = copy.deepcopy(old)
    new["$defs"]["OrderCancelled"]["properties"]["reason"]["type"] = "integer"
    assert _kinds_at(breaking_changes(old, new)) == {
        ("event<OrderCancelled>.reason", ChangeKind.RETYPED_FIELD)
    }


def test_a_new_required_field_without_default_is_caught() -> None:
    old = _baseline("OrderCancelled")
    new = copy.deepcopy(old)
    new["properties"]["cancelled_by"] = {"type": "string", "title": "Cancelled By"}
    new["required"].append("cancelled_by")
    assert _kinds_at(breaking_changes(old, new)) == {
        ("cancelled_by", ChangeKind.NEW_REQUIRED_FIELD)
    }


def test_an_optional_field_that_becomes_required_is_caught() -> None:
    old = _baseline("OrderCancelled")
    new = copy.deepcopy(old)
    new["properties"]["reason"].pop("default")
    new["required"].append("reason")
    assert _kinds_at(breaking_changes(old, new)) == {("reason", ChangeKind.FIELD_BECAME_REQUIRED)}


def test_narrowed_enums_and_unions_are_caught() -> None:
    old = _baseline("OrderProgress")
    new = copy.deepcopy(old)
    new["$defs"]["OrderStatus"]["enum"].remove("declined")
    new["properties"]["event"]["oneOf"].pop()  # OrderCancelled no longer allowed
    del new["properties"]["event"]["discriminator"]["mapping"]["OrderCancelled"]
    changes = breaking_changes(old, new)
    assert _kinds_at(changes) == {
        ("status", ChangeKind.NARROWED_ENUM),
        ("event", ChangeKind.NARROWED_ENUM),
    }
    assert "declined" in str(next(c for c in changes if c.path == "status"))


def test_additive_changes_do_not_break() -> None:
    old = _baseline("OrderProgress")
    new = copy.deepcopy(old)
    new["properties"]["carrier"] = {"type": "string", "default": "post", "title": "Carrier"}
    new["$defs"]["OrderStatus"]["enum"].append("refunded")
    del new["properties"]["shipment_id"]  # optional: consumers cope without it
    new["examples"] = []
    new["$defs"]["LineItem"]["properties"]["sku"]["maxLength"] = 128  # constraints: unchecked
    assert breaking_changes(old, new) == []
