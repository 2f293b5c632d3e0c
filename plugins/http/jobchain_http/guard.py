"""The gateway's front door: the token, the body limit, the content type, and errors as JSON.

:class:`Guard` is plain ASGI middleware around the whole application, so it
answers before any endpoint runs: 401 without the right bearer token, 413 for
a declared ``Content-Length`` over the limit (and, for a chunked body, as soon
as the bytes read pass it: the body is never read whole), 415 for a body that
is not JSON (but on the plain line routes, ``raw_prefixes``, whose body is
text). Every error a request can cause is an :class:`HttpError`,
answered as ``{"error": {"status", "code", "message", "path"}}``; anything
unexpected is logged (its type and the frames it passed, never the request
body, local variables or its message) and answered 500 with no traceback.
"""

from __future__ import annotations

import hmac
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobchain_http.wire import dumps

__all__ = ["BodyTooLargeError", "Guard", "HttpError", "error_body", "send_json"]

logger = structlog.get_logger("jobchain_http.gateway")

_BODY_METHODS = {b"POST", b"PUT", b"PATCH", b"DELETE"}

#: headers on every response: no sniffing a JSON body into HTML, no caching of job data
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
    (b"referrer-policy", b"no-referrer"),
]


class HttpError(Exception):
    """An answer other than 2xx: ``status``, a short ``code``, a message and, for bad input, its ``path``."""

    def __init__(
        self, status: int, code: str, message: str, *, path: str | None = None, **extra: Any
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.path = path
        #: more facts for the client, beside the message (the holder of a taken worker name)
        self.extra = extra
        super().__init__(message)


class BodyTooLargeError(HttpError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            413, "body_too_large", f"the request body is over the limit of {limit} bytes", limit=limit
        )


def error_body(status: int, code: str, message: str, path: str | None = None, **extra: Any) -> bytes:
    error: dict[str, Any] = {"status": status, "code": code, "message": message, **extra}
    if path is not None:
        error["path"] = path
    return dumps({"error": error})


async def send_json(send: Send, status: int, body: bytes, extra: Iterable[tuple[bytes, bytes]] = ()) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *SECURITY_HEADERS,
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _where(exc: BaseException, frames: int = 8) -> list[str]:
    """``file:line in function`` of the innermost ``frames`` frames of ``exc``'s traceback: no values."""
    found = traceback.extract_tb(exc.__traceback__)[-frames:]
    return [f"{Path(f.filename).name}:{f.lineno} in {f.name}" for f in found]


class Guard:
    """Token, size and content-type checks before the application; JSON for whatever goes wrong."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        max_body: int,
        public_paths: Iterable[str] = (),
        raw_prefixes: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.max_body = max_body
        self.public_paths = frozenset(public_paths)
        #: paths whose body is not JSON (any content type is taken): the plain line queue's push
        self.raw_prefixes = tuple(raw_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        try:
            self._check(scope)
            await self.app(scope, self._limited(receive), guarded_send)
        except HttpError as exc:
            if started:
                return
            extra = [(b"www-authenticate", b'Bearer realm="jobchain"')] if exc.status == 401 else []
            body = error_body(exc.status, exc.code, exc.message, exc.path, **exc.extra)
            await send_json(send, exc.status, body, extra)
        except Exception as exc:
            # no exc_info: a traceback renderer may print local variables (the request body), and the
            # message may quote data; the error's type and where it was raised are enough to find it
            logger.error(
                "request_failed",
                method=scope.get("method"),
                path=scope.get("path"),
                error_type=type(exc).__name__,
                where=_where(exc),
            )
            if not started:
                await send_json(
                    send, 500, error_body(500, "internal", "internal error; see the gateway's log")
                )

    def _check(self, scope: Scope) -> None:
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        if self.token is not None and scope["path"] not in self.public_paths:
            given = headers.get(b"authorization", b"")
            scheme, _, credential = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(credential.strip(), self.token):
                raise HttpError(401, "unauthorized", "missing or wrong token (Authorization: Bearer TOKEN)")
        method = scope.get("method", "GET").encode()
        if method not in _BODY_METHODS:
            return
        length_raw = headers.get(b"content-length")
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        if length_raw is not None:
            try:
                length = int(length_raw)
            except ValueError:
                raise HttpError(400, "bad_request", "Content-Length is not a number") from None
            if length > self.max_body:
                raise BodyTooLargeError(self.max_body)
            has_body = length > 0
        else:
            has_body = chunked
        if has_body and not scope["path"].startswith(self.raw_prefixes):
            ctype = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
            if ctype != b"application/json":
                shown = ctype.decode("latin-1") or "none"
                raise HttpError(
                    415, "unsupported_media_type", f"send JSON (Content-Type: application/json), not {shown}"
                )

    def _limited(self, receive: Receive) -> Receive:
        limit = self.max_body
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLargeError(limit)
            return message

        return limited
