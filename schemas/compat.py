"""Which changes between two JSON Schemas of an event break its consumers.

Pure: it compares two schema documents (as ``model_json_schema()`` writes them, with
``$defs`` and ``$ref``) and lists the breaking changes; it reads no file and imports no
model. A change breaks when a consumer built on one side can no longer read records
written with the other while ``schema_version`` stays the same:

* **removed required field** — the old side's consumers expect it;
* **retyped field** — the set of JSON types (with ``format``) a field may hold changed;
* **new required field without default** — records already on the topics lack it;
* **field became required** — an optional field now has to be there, same reason;
* **narrowed enum** — a value (or a union's alternative) the old side accepted is gone.

Not checked: tightened constraints (lengths, patterns, bounds) and descriptions or
examples. A deliberate break bumps ``schemas.orders.SCHEMA_VERSION`` and freezes a new
baseline next to ``schemas/baseline/v1``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

Schema = Mapping[str, Any]


class ChangeKind(StrEnum):
    """The kinds of change that break a consumer."""

    REMOVED_REQUIRED_FIELD = "removed required field"
    RETYPED_FIELD = "retyped field"
    NEW_REQUIRED_FIELD = "new required field without default"
    FIELD_BECAME_REQUIRED = "field became required"
    NARROWED_ENUM = "narrowed enum"


@dataclass(frozen=True, slots=True)
class BreakingChange:
    """One breaking change, at a dotted path into the record (``items[].sku``)."""

    path: str
    kind: ChangeKind
    detail: str

    def __str__(self) -> str:
        return f"{self.path}: {self.kind} ({self.detail})"


def breaking_changes(old: Schema, new: Schema) -> list[BreakingChange]:
    """Every change from ``old`` to ``new`` that breaks a consumer, in path order."""
    found: list[BreakingChange] = []
    _Comparison(old, new, found).compare(old, new, path="", seen=set())
    return sorted(found, key=lambda change: (change.path, change.kind))


class _Comparison:
    def __init__(self, old_root: Schema, new_root: Schema, found: list[BreakingChange]) -> None:
        self.old_root = old_root
        self.new_root = new_root
        self.found = found

    def add(self, path: str, kind: ChangeKind, detail: str) -> None:
        self.found.append(BreakingChange(path or "<root>", kind, detail))

    def compare(self, old: Schema, new: Schema, path: str, seen: set[tuple[str, str]]) -> None:
        pair = (old.get("$ref", ""), new.get("$ref", ""))
        if pair != ("", ""):
            if pair in seen:  # a recursive model: this pair is being compared already
                return
            seen = seen | {pair}
        old, new = _resolve(old, self.old_root), _resolve(new, self.new_root)
        old_kinds, new_kinds = _kinds(old, self.old_root), _kinds(new, self.new_root)
        if old_kinds != new_kinds:
            self.add(path, ChangeKind.RETYPED_FIELD, f"{_show(old_kinds)} -> {_show(new_kinds)}")
            return
        self._compare_enums(old, new, path)
        old_variants = _variants(old, self.old_root)
        if old_variants:
            self._compare_variants(old_variants, _variants(new, self.new_root), path, seen)
            return
        if "properties" in old or "properties" in new:
            self._compare_objects(old, new, path, seen)
        if isinstance(old.get("items"), Mapping) and isinstance(new.get("items"), Mapping):
            self.compare(old["items"], new["items"], f"{path}[]", seen)

    def _compare_enums(self, old: Schema, new: Schema, path: str) -> None:
        old_values, new_values = _enum_values(old), _enum_values(new)
        if old_values is None:
            return
        gone = [value for value in old_values if new_values is None or value not in new_values]
        if new_values is not None and gone:
            self.add(path, ChangeKind.NARROWED_ENUM, f"no longer allows {gone}")

    def _compare_variants(
        self,
        old: dict[str, Schema],
        new: dict[str, Schema],
        path: str,
        seen: set[tuple[str, str]],
    ) -> None:
        gone = sorted(set(old) - set(new))
        if gone:
            self.add(path, ChangeKind.NARROWED_ENUM, f"alternatives {gone} removed")
        for name in sorted(set(old) & set(new)):
            self.compare(old[name], new[name], f"{path}<{name}>", seen)

    def _compare_objects(
        self, old: Schema, new: Schema, path: str, seen: set[tuple[str, str]]
    ) -> None:
        old_fields: Mapping[str, Schema] = old.get("properties", {})
        new_fields: Mapping[str, Schema] = new.get("properties", {})
        old_required = set(old.get("required", ()))
        new_required = set(new.get("required", ()))
        for name, old_field in old_fields.items():
            where = f"{path}.{name}" if path else name
            if name not in new_fields:
                if name in old_required:
                    self.add(where, ChangeKind.REMOVED_REQUIRED_FIELD, "consumers expect it")
                continue
            if name in new_required and name not in old_required:
                self.add(where, ChangeKind.FIELD_BECAME_REQUIRED, "older records may lack it")
            self.compare(old_field, new_fields[name], where, seen)
        for name in new_fields.keys() - old_fields.keys():
            if name in new_required:
                where = f"{path}.{name}" if path else name
                self.add(where, ChangeKind.NEW_REQUIRED_FIELD, "records on the topics lack it")


def _resolve(schema: Schema, root: Schema) -> Schema:
    """Follow local ``$ref`` pointers (``#/$defs/X``, ``#/components/schemas/X``)."""
    hops = 0
    while "$ref" in schema and hops < 32:
        target: Any = root
        for part in str(schema["$ref"]).removeprefix("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        # Keywords beside a $ref (a description, a default) ride along with the target.
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        hops += 1
    return schema


def _alternatives(schema: Schema) -> list[Schema]:
    for keyword in ("oneOf", "anyOf"):
        if isinstance(schema.get(keyword), list):
            return list(schema[keyword])
    return []


def _kinds(schema: Schema, root: Schema) -> frozenset[str]:
    """The JSON types a value of ``schema`` may have, ``format`` included."""
    alternatives = _alternatives(schema)
    if alternatives:
        kinds: set[str] = set()
        for alternative in alternatives:
            kinds |= _kinds(_resolve(alternative, root), root)
        return frozenset(kinds)
    declared = schema.get("type")
    if declared is None:
        values = _enum_values(schema)
        if values is None:
            return frozenset({"any"})
        declared = sorted({_json_type(value) for value in values})
    types = declared if isinstance(declared, list) else [declared]
    fmt = schema.get("format")
    return frozenset(f"{t}:{fmt}" if fmt and t == "string" else str(t) for t in types)


def _variants(schema: Schema, root: Schema) -> dict[str, Schema]:
    """A union's object alternatives by name (discriminator value or title)."""
    variants: dict[str, Schema] = {}
    for alternative in _alternatives(schema):
        resolved = _resolve(alternative, root)
        if "properties" not in resolved:
            continue  # scalar alternatives (``str | None``) are covered by the type check
        name = _variant_name(resolved, schema.get("discriminator"))
        variants[name] = alternative
    return variants


def _variant_name(schema: Schema, discriminator: Any) -> str:
    if isinstance(discriminator, Mapping):
        tag = schema.get("properties", {}).get(discriminator.get("propertyName"), {})
        values = _enum_values(tag)
        if values:
            return str(values[0])
    return str(schema.get("title", "?"))


def _enum_values(schema: Schema) -> list[Any] | None:
    if "enum" in schema:
        return list(schema["enum"])
    if "const" in schema:
        return [schema["const"]]
    return None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string"


def _show(kinds: frozenset[str]) -> str:
    return " | ".join(sorted(kinds))


__all__ = ["BreakingChange", "ChangeKind", "breaking_changes"]
