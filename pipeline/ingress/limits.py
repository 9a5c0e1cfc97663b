"""How much a caller may send: body size, request rate, and the headers every answer
carries.

:class:`BodySizeLimit` and :class:`SecurityHeaders` are plain ASGI middlewares around the
whole app; :class:`RateLimiter` is a token bucket per caller that the API's security
dependency consults once it knows who is calling.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import HTTPException, status
from starlette.types import ASGIApp, Message, Receive, Scope, Send

JSON_POLICY = "default-src 'none'; frame-ancestors 'none'"
"""The Content-Security-Policy of JSON answers: they load nothing and frame nothing."""

PAGE_POLICY = "frame-ancestors 'none'"
"""The policy of the HTML pages (/docs, /asyncapi): they load their scripts and styles
from a CDN with inline bootstrapping, which a ``default-src 'none'`` would block."""

SECURITY_HEADERS = {
    b"x-content-type-options": b"nosniff",
    b"x-frame-options": b"DENY",
    b"referrer-policy": b"no-referrer",
}


class BodyTooLarge(HTTPException):
    """The request body is larger than ``max_body_bytes``: 413."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(
            status.HTTP_413_CONTENT_TOO_LARGE, f"request body larger than {max_bytes} bytes"
        )


class BodySizeLimit:
    """Refuses bodies over ``max_bytes`` with 413 before anything parses them: at once
    when Content-Length says so, else as soon as the streamed bytes pass the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on with a receive channel that counts its bytes."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _answer_too_large(send, self.max_bytes)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # An HTTPException: FastAPI re-raises it from its body reading (any
                    # other error there becomes a 400), and its handler answers 413.
                    raise BodyTooLarge(self.max_bytes)
            return message

        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            # Reached only when nothing inside handled it (a route reading the stream
            # itself); answer unless a response is already under way.
            if started:
                raise
            await _answer_too_large(send, self.max_bytes)


class SecurityHeaders:
    """Adds the hardening headers to every answer: no sniffing, no framing, no referrer,
    no caching, and a Content-Security-Policy that fits JSON or the HTML pages."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; add the headers to the response's start."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[tuple[bytes, bytes]] = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                content_type = next(
                    (value for name, value in headers if name.lower() == b"content-type"), b""
                )
                policy = PAGE_POLICY if content_type.startswith(b"text/html") else JSON_POLICY
                extra = {
                    **SECURITY_HEADERS,
                    b"cache-control": b"no-store",
                    b"content-security-policy": policy.encode(),
                }
                headers += [(name, value) for name, value in extra.items() if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated_at: float


class RateLimiter:
    """A token bucket per caller key: ``burst`` requests at once, refilled at
    ``per_s``; the least recently seen of more than ``max_callers`` keys are forgotten
    (a forgotten caller starts again with a full bucket)."""

    def __init__(
        self,
        per_s: float,
        burst: int,
        *,
        max_callers: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_s = per_s
        self.burst = burst
        self.max_callers = max_callers
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def retry_after(self, caller: str) -> float | None:
        """Take one request from ``caller``'s bucket: ``None`` when allowed, else the
        seconds until the bucket holds a request again."""
        now = self._clock()
        bucket = self._buckets.pop(caller, None) or _Bucket(float(self.burst), now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated_at) * self.per_s)
        bucket.updated_at = now
        self._buckets[caller] = bucket  # most recently seen last
        while len(self._buckets) > self.max_callers:
            self._buckets.popitem(last=False)
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return None
        return (1 - bucket.tokens) / self.per_s

    def admit(self, caller: str) -> None:
        """Take one request from ``caller``'s bucket or refuse it with 429 and
        ``Retry-After`` (whole seconds, at least 1)."""
        wait_s = self.retry_after(caller)
        if wait_s is not None:
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                "too many requests",
                headers={"Retry-After": str(max(1, math.ceil(wait_s)))},
            )


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _answer_too_large(send: Send, max_bytes: int) -> None:
    body = f'{{"detail":"request body larger than {max_bytes} bytes"}}'.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status.HTTP_413_CONTENT_TOO_LARGE,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
