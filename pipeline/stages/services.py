"""The external services the checkout's stages call, as interfaces, with in-process
defaults.

The defaults decide business outcomes (out of stock, declined) from the order id, so a
retried or replayed event gets the same answer; transient failures are random and
controlled by a :class:`Simulation` (the app passes ``PIPELINE_SERVICES_*``) so load
and fault tests can drive them.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from dataclasses import dataclass
from typing import Protocol

from pipeline import RetryableError
from schemas import LineItem


class ServiceUnavailable(RetryableError):
    """A service did not answer this time; the runtime retries the event."""


class Simulation(Protocol):
    """How the in-process services behave."""

    @property
    def latency_ms(self) -> float:
        """Each call's latency."""
        ...

    @property
    def transient_failure_rate(self) -> float:
        """The share of calls that fail with :class:`ServiceUnavailable`."""
        ...

    @property
    def decline_rate(self) -> float:
        """The share of orders whose charge is declined."""
        ...

    @property
    def out_of_stock_rate(self) -> float:
        """The share of orders out of stock."""
        ...

    @property
    def seed(self) -> int | None:
        """Seed of the transient failures."""
        ...


@dataclass(frozen=True, slots=True)
class Reservation:
    """Stock held for an order, or the reason it could not be."""

    reservation_id: str | None
    out_of_stock_sku: str | None = None


@dataclass(frozen=True, slots=True)
class PaymentResult:
    """A charge that went through, or the reason it was declined."""

    payment_id: str | None
    declined_reason: str | None = None


class InventoryService(Protocol):
    """Holds and releases stock."""

    async def reserve(self, order_id: str, items: tuple[LineItem, ...]) -> Reservation:
        """Hold stock for every line of the order (idempotent per order id)."""
        ...

    async def release(self, order_id: str) -> None:
        """Give back the stock held for the order, if any."""
        ...


class PaymentGateway(Protocol):
    """Charges and refunds customers."""

    async def charge(self, order_id: str, amount_cents: int, idempotency_key: str) -> PaymentResult:
        """Charge ``amount_cents``; the same ``idempotency_key`` never charges twice."""
        ...

    async def refund(self, order_id: str, idempotency_key: str) -> None:
        """Refund whatever was charged for the order."""
        ...


@dataclass(frozen=True, slots=True)
class Services:
    """Everything the stages call outside the pipeline, given to them by injection."""

    inventory: InventoryService
    payment: PaymentGateway


def _fraction(*parts: str) -> float:
    """A stable number in [0, 1) derived from the given strings."""
    digest = hashlib.blake2b("|".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class _Simulated:
    """Latency and transient failures shared by the in-process services."""

    def __init__(self, settings: Simulation) -> None:
        self._latency_s = settings.latency_ms / 1000
        self._failure_rate = settings.transient_failure_rate
        self._random = random.Random(settings.seed)
        self.settings = settings

    async def _call(self, service: str) -> None:
        # Zero latency must not suspend: a handler that never waits stays on the fast path.
        if self._latency_s:
            await asyncio.sleep(self._latency_s)
        if self._failure_rate and self._random.random() < self._failure_rate:
            raise ServiceUnavailable(f"{service} is temporarily unavailable")


class SimulatedInventory(_Simulated):
    """In-process inventory: a deterministic share of orders is out of stock."""

    async def reserve(self, order_id: str, items: tuple[LineItem, ...]) -> Reservation:
        """Hold stock; out of stock for a stable fraction of orders."""
        await self._call("inventory")
        if _fraction("stock", order_id) < self.settings.out_of_stock_rate:
            return Reservation(None, out_of_stock_sku=items[0].sku)
        return Reservation(f"rsv-{order_id}")

    async def release(self, order_id: str) -> None:
        """Release stock (nothing to keep in memory for the simulation)."""
        await self._call("inventory")


class SimulatedPayment(_Simulated):
    """In-process payment gateway: a deterministic share of charges is declined."""

    async def charge(self, order_id: str, amount_cents: int, idempotency_key: str) -> PaymentResult:
        """Charge; declined for a stable fraction of orders."""
        await self._call("payment")
        if _fraction("pay", order_id) < self.settings.decline_rate:
            return PaymentResult(None, declined_reason="card declined")
        return PaymentResult(f"pay-{idempotency_key}")

    async def refund(self, order_id: str, idempotency_key: str) -> None:
        """Refund (nothing to keep in memory for the simulation)."""
        await self._call("payment")


def simulated_services(settings: Simulation) -> Services:
    """The in-process defaults, configured from settings."""
    return Services(inventory=SimulatedInventory(settings), payment=SimulatedPayment(settings))
