"""Who may see and change what: tokens, sessions, CSRF tokens, response headers, bounded parameters.

The dashboard keeps its sessions in the process (:class:`Sessions`): the
cookie holds only a random id, so logging out ends the session for good and a
stolen cookie dies with it. Every session, an anonymous one included, has its
own CSRF token, which every form posts back and every change checks
(:meth:`Guard.check_csrf`). Roles: ``admin`` sees and changes, ``read``
only sees. With no token configured (allowed on a loopback address only) a
visitor is ``admin``, or ``read`` when the dashboard runs read-only.

Every response carries a Content-Security-Policy with a fresh nonce: the only
script a page runs is the plugin's own file, loaded with that nonce; nothing
is loaded from another origin.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence

from attrs import define, field, frozen

__all__ = [
    "ADMIN",
    "READ",
    "Auth",
    "BadParameterError",
    "Session",
    "Sessions",
    "bounded_float",
    "bounded_int",
    "content_security_policy",
    "security_headers",
    "text_param",
]

ADMIN = "admin"
READ = "read"

#: the session cookie's name
COOKIE = "jobchain_dashboard"


class BadParameterError(ValueError):
    """A query or form parameter out of its bounds: the page answers 400 with this one line."""


@frozen
class Auth:
    """The tokens that log in, by role; none at all means an open (loopback-only) dashboard."""

    admin_tokens: tuple[str, ...] = ()
    read_tokens: tuple[str, ...] = ()
    #: nobody may change anything, whatever their token
    read_only: bool = False

    def __attrs_post_init__(self) -> None:
        for token in (*self.admin_tokens, *self.read_tokens):
            if len(token) < 12:
                raise ValueError("a dashboard token must be at least 12 characters long")

    @property
    def required(self) -> bool:
        return bool(self.admin_tokens or self.read_tokens)

    def open_role(self) -> str | None:
        """The role of a visitor who has not logged in: None when a token is required."""
        if self.required:
            return None
        return READ if self.read_only else ADMIN

    def role_of(self, token: str) -> str | None:
        """The role ``token`` logs in as, or None; every token is compared in constant time."""
        given = token.encode()
        role: str | None = None
        for candidate in self.admin_tokens:
            if hmac.compare_digest(given, candidate.encode()):
                role = ADMIN
        for candidate in self.read_tokens:
            if hmac.compare_digest(given, candidate.encode()) and role is None:
                role = READ
        if role == ADMIN and self.read_only:
            return READ
        return role


@define
class Session:
    id: str
    csrf: str
    #: ``admin``, ``read``, or None for a visitor who has not logged in
    role: str | None
    created: float
    seen: float


@define
class Sessions:
    """Sessions by id, in memory, ended after ``idle`` seconds unused or ``lifetime`` seconds in all.

    Sessions that have not logged in (a visitor's, kept for the login form's
    CSRF token) and logged-in ones are kept apart, at most ``capacity`` of each,
    the least recently used going first: anyone can make the first kind by the
    thousand without a cookie, and doing so must not end anybody's login.
    """

    idle: float = 8 * 3600.0
    lifetime: float = 24 * 3600.0
    capacity: int = 10_000
    _by_id: OrderedDict[str, Session] = field(factory=OrderedDict, init=False)
    _visitors: OrderedDict[str, Session] = field(factory=OrderedDict, init=False)
    _lock: threading.Lock = field(factory=threading.Lock, init=False)

    def new(self, role: str | None) -> Session:
        now = time.monotonic()
        session = Session(
            id=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32), role=role, created=now, seen=now
        )
        kept = self._visitors if role is None else self._by_id
        with self._lock:
            kept[session.id] = session
            while len(kept) > self.capacity:
                kept.popitem(last=False)
        return session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id or len(session_id) > 100:
            return None
        now = time.monotonic()
        with self._lock:
            kept = self._by_id if session_id in self._by_id else self._visitors
            session = kept.get(session_id)
            if session is None:
                return None
            if now - session.seen > self.idle or now - session.created > self.lifetime:
                del kept[session_id]
                return None
            session.seen = now
            kept.move_to_end(session_id)
            return session

    def drop(self, session_id: str) -> None:
        with self._lock:
            self._by_id.pop(session_id, None)
            self._visitors.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._by_id) + len(self._visitors)


@define
class LoginThrottle:
    """At most ``attempts`` failed logins per client address in ``per`` seconds."""

    attempts: int = 10
    per: float = 60.0
    _failures: dict[str, deque[float]] = field(factory=dict, init=False)
    _lock: threading.Lock = field(factory=threading.Lock, init=False)

    def allowed(self, client: str) -> bool:
        now = time.monotonic()
        with self._lock:
            seen = self._failures.get(client)
            if seen is None:
                return True
            while seen and now - seen[0] > self.per:
                seen.popleft()
            if not seen:
                del self._failures[client]
            return len(seen) < self.attempts

    def failed(self, client: str) -> None:
        with self._lock:
            if len(self._failures) > 10_000:
                self._failures.clear()
            self._failures.setdefault(client, deque()).append(time.monotonic())


def csrf_matches(session: Session, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(session.csrf.encode(), given.encode())


def content_security_policy(nonce: str) -> str:
    """Only this origin's files; the one script and style must carry the response's nonce."""
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src 'nonce-{nonce}'",
            f"style-src 'self' 'nonce-{nonce}'",
            "img-src 'self' data:",
            "connect-src 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ]
    )


def security_headers(nonce: str) -> dict[str, str]:
    return {
        "content-security-policy": content_security_policy(nonce),
        "x-content-type-options": "nosniff",
        "x-frame-options": "DENY",
        "referrer-policy": "same-origin",
        "cache-control": "no-store",
        "cross-origin-opener-policy": "same-origin",
    }


def _one(params: Mapping[str, str] | Mapping[str, Sequence[str]], name: str) -> str | None:
    value = params.get(name)
    if value is None or isinstance(value, str):
        return value
    return value[0] if value else None


def bounded_int(
    params: Mapping[str, str] | Mapping[str, Sequence[str]], name: str, default: int, low: int, high: int
) -> int:
    """Parameter ``name`` as an int in ``[low, high]``; :class:`BadParameterError` otherwise."""
    raw = _one(params, name)
    if raw is None or raw == "":
        return default
    if len(raw) > 12 or not raw.strip().lstrip("-").isdigit():
        raise BadParameterError(f"{name} must be a whole number between {low} and {high}")
    value = int(raw)
    if not low <= value <= high:
        raise BadParameterError(f"{name} must be between {low} and {high}, got {value}")
    return value


def bounded_float(
    params: Mapping[str, str] | Mapping[str, Sequence[str]],
    name: str,
    default: float,
    low: float,
    high: float,
) -> float:
    """Parameter ``name`` as a finite number in ``[low, high]``; :class:`BadParameterError` otherwise."""
    raw = _one(params, name)
    if raw is None or raw == "":
        return default
    try:
        if len(raw) > 24:
            raise ValueError
        value = float(raw)
    except ValueError:
        raise BadParameterError(f"{name} must be a number between {low:g} and {high:g}") from None
    if not low <= value <= high:  # also false for nan
        raise BadParameterError(f"{name} must be between {low:g} and {high:g}")
    return value


def text_param(
    params: Mapping[str, str] | Mapping[str, Sequence[str]], name: str, *, max_len: int = 200
) -> str | None:
    """Parameter ``name`` as text (None when absent or empty), at most ``max_len`` characters."""
    raw = _one(params, name)
    if raw is None or raw == "":
        return None
    if len(raw) > max_len:
        raise BadParameterError(f"{name} is longer than {max_len} characters")
    return raw
