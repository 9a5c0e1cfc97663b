"""The sensor feed's events."""

from __future__ import annotations

from pydantic import BaseModel


class Reading(BaseModel):
    """One measurement of one device, keyed by ``device_id`` on every topic."""

    reading_id: str
    """Unique per reading: how a redelivered reading is recognised."""
    device_id: str
    site: str
    celsius: float
    seq: int
    """The device's own counter: its readings are handled in this order."""


class Alert(BaseModel):
    """A hot reading, keyed by ``site`` so a site's on-call sees all of its alerts."""

    reading_id: str
    site: str
    device_id: str
    celsius: float
    seq: int
