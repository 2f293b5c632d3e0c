"""Listening sockets for the commands that serve HTTP (``jobchain http serve``, ``jobchain dashboard``).

:func:`parse_bind` reads ``HOST:PORT``, :func:`is_loopback` says whether a
host is this machine only, and :func:`listen` opens the socket (so the URL,
with the port 0 picked, is known before the server starts) or stops with one
line saying why it cannot.
"""

from __future__ import annotations

import ipaddress
import socket

import click

from jobchain.cli.common import CliError

__all__ = ["is_loopback", "listen", "parse_bind"]


def parse_bind(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6; an empty host is 127.0.0.1); PORT 0 picks a free one."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise click.BadParameter(f"{text!r} is not HOST:PORT", param_hint="'--bind'")
    return host.strip("[]") or "127.0.0.1", int(port)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (IPv4 and IPv6)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def listen(host: str, port: int, *, backlog: int, bind: str) -> tuple[socket.socket, str]:
    """A listening TCP socket on ``host:port`` and its ``http://`` URL; :class:`CliError` if it cannot bind.

    ``bind`` is the option's text, for the error. The socket is created with
    ``IPPROTO_TCP``: asyncio sets TCP_NODELAY on accepted connections only then
    (without it each small answer can wait 40 ms).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise CliError(f"cannot listen on {bind}: {exc.strerror or exc}") from None
    sock.listen(backlog)
    bound = sock.getsockname()
    shown = f"[{bound[0]}]" if family == socket.AF_INET6 else bound[0]
    return sock, f"http://{shown}:{bound[1]}"
