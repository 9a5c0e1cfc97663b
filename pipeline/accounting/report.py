"""What the pipeline verifier found, per stage and for the whole flow."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(slots=True)
class StageReport:
    """One stage's accounting: each event it read and what became of it.

    ``dropped``, ``lost`` and ``out_of_order`` are ``None`` for a stage that does not
    identify its events: they cannot be told apart there.
    """

    stage: str
    identified: bool
    may_drop: bool
    consumed: int = 0
    """Events read (a stage that identifies them: distinct events; else records)."""
    passed: int | None = 0
    """Events with at least one output."""
    outputs: int = 0
    """Output records written for them."""
    dead_lettered: int = 0
    replayed: int = 0
    parked: int = 0
    dropped: int | None = 0
    lost: int | None = 0
    duplicated: int = 0
    out_of_order: int | None = 0
    unknown: int = 0
    """Records on the stage's outputs or dead letters for no event it read."""
    examples: dict[str, list[str]] = field(default_factory=dict)

    def example(self, kind: str, text: str) -> None:
        """Keep ``text`` as one of (at most five) examples of ``kind``."""
        found = self.examples.setdefault(kind, [])
        if len(found) < 5:
            found.append(text)


@dataclass(slots=True)
class FlowReport:
    """The whole pipeline: ``clean`` when no stage lost, duplicated or reordered an event
    and no record stands for an event no stage read."""

    pipeline: str
    events: int = 0
    """Records of the entry topics (where events come in)."""
    delivered: int = 0
    """Records of the terminal topics (where events leave)."""
    stages: list[StageReport] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)
    """Stages that do not identify their events: no loss or order check there."""
    notes: list[str] = field(default_factory=list)

    def _total(self, name: str) -> int:
        return sum(getattr(stage, name) or 0 for stage in self.stages)

    @property
    def dead_lettered(self) -> int:
        """Dead letters waiting for an operator, over every stage."""
        return self._total("dead_lettered")

    @property
    def dropped(self) -> int:
        """Events a stage consumed without output (a filter), over every stage."""
        return self._total("dropped")

    @property
    def lost(self) -> int:
        """Events a stage read that went nowhere, over every stage."""
        return self._total("lost")

    @property
    def duplicated(self) -> int:
        """Extra records for one event, over every stage."""
        return self._total("duplicated")

    @property
    def out_of_order(self) -> int:
        """Outputs that overtook an earlier event of their input key."""
        return self._total("out_of_order")

    @property
    def unknown(self) -> int:
        """Records for events no stage read."""
        return self._total("unknown")

    @property
    def loss_verified(self) -> bool:
        """Whether every stage identifies its events, so loss was checked everywhere."""
        return not self.unverified

    @property
    def clean(self) -> bool:
        """No loss, no duplicate, no reordering, no record without an event."""
        return not (self.lost or self.duplicated or self.out_of_order or self.unknown)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view with the totals, ``loss_verified`` and ``clean``."""
        return {
            "pipeline": self.pipeline,
            "events": self.events,
            "delivered": self.delivered,
            "dead_lettered": self.dead_lettered,
            "dropped": self.dropped,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "out_of_order": self.out_of_order,
            "unknown": self.unknown,
            "loss_verified": self.loss_verified,
            "unverified": self.unverified,
            "notes": self.notes,
            "stages": [asdict(stage) for stage in self.stages],
            "clean": self.clean,
        }
