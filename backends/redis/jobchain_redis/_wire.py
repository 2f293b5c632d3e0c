"""A lean ``execute`` for the hot paths' pipelines and transactions (submit, reserve, settle).

redis-py's :meth:`Pipeline.execute <redis.client.Pipeline.execute>` wraps
every call in layers the backends do not use: a retry policy (a transaction
must never be re-sent blindly, see :func:`jobchain_redis.connection.transact`),
observability timers, ``HIMPORT`` preparation, and a ``parse_response`` per
reply. On a five-command transaction they cost about three times the CPU of
packing the same commands and reading their replies (measured in
``docs/benchmarks.md``), and the backends' throughput is bound by that CPU.

:class:`LeanPipeline` is a redis-py ``Pipeline`` (the same command methods,
command stack, ``WATCH`` handling and reset) whose ``execute`` packs the stack
once, reads the replies straight off the connection, and runs the response
callbacks itself, as redis-py does: the replies have the same shapes. It
keeps redis-py's semantics where they matter:

* a transaction's error replies (queued or from EXEC) are raised or left in
  place exactly as redis-py does (``raise_on_error``); a nil EXEC is a
  :class:`~redis.WatchError`;
* a connection lost while ``WATCH`` (or the explicit watch flag a MULTI
  without WATCH sets) is on becomes a :class:`~redis.WatchError` whose
  ``__context__`` is the connection error: nothing is re-sent;
* a plain pipeline (no watch) that loses its connection is handed to
  redis-py's own ``execute``, with its retries, on a new connection.

Anything unusual (Lua scripts queued, ``EMPTY_RESPONSE`` or ``NEVER_DECODE``
options) goes to redis-py's ``execute`` unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
import redis.client
from redis.exceptions import ExecAbortError

pack_command: Any
try:
    from hiredis import pack_command
except ImportError:  # pragma: no cover - the pure-Python packer of redis-py is used instead
    pack_command = None

__all__ = ["LeanPipeline", "lean_pipeline", "pack"]

_PLAIN = ("EMPTY_RESPONSE", "NEVER_DECODE")


def _unusual(stack: list[Any]) -> bool:
    """Options the lean path does not handle (redis-py's own execution then runs)."""
    return any(key in options for _, options in stack for key in _PLAIN)


def pack(conn: Any, commands: Sequence[tuple[Any, ...]]) -> Any:
    """The commands in the Redis protocol (chunks for ``send_packed_command``), packed by hiredis (in C)
    where every argument allows it."""
    if pack_command is None:
        return conn.pack_commands(commands)
    try:
        return [
            b"".join(
                [pack_command((*args[0].split(), *args[1:]) if " " in args[0] else args) for args in commands]
            )
        ]
    except TypeError:  # bytearray, memoryview, a command name in bytes: redis-py packs (and checks) them
        return conn.pack_commands(commands)


class LeanPipeline(redis.client.Pipeline):
    """A redis-py pipeline with a lean :meth:`execute` (see the module's text)."""

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        me: Any = self  # redis-py's Pipeline is untyped (and its `transaction` attribute hides a method)
        stack = self.command_stack
        if not stack and not self.watching:
            return []
        if self.scripts:
            return super().execute(raise_on_error)
        conn = self.connection
        if conn is None:
            conn = self.connection = self.connection_pool.get_connection()
        transaction = me.transaction or me.explicit_transaction
        try:
            if transaction:
                return self._execute_transaction(conn, stack, raise_on_error)
            return self._execute_pipeline(conn, stack, raise_on_error)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            me.connection.disconnect()
            if self.watching:
                # EXEC may or may not have been applied: the caller reads what Redis holds, never re-sends
                raise redis.WatchError("the connection was lost during a watched transaction") from exc
            if transaction:
                raise
            # a plain pipeline of reads and idempotent writes: redis-py's execute retries it
            self.command_stack = stack
            self.connection_pool.release(conn)
            self.connection = None
            return super().execute(raise_on_error)
        finally:
            self.reset()

    def _execute_transaction(self, conn: Any, stack: list[Any], raise_on_error: bool) -> list[Any]:
        if _unusual(stack):
            return list(super()._execute_transaction(conn, stack, raise_on_error))
        commands = [("MULTI",), *(args for args, _ in stack), ("EXEC",)]
        conn.send_packed_command(pack(conn, commands))
        me: Any = self
        read = conn.read_response
        errors: list[tuple[int, redis.ResponseError]] = []
        try:
            read()  # MULTI's OK
        except redis.ResponseError as exc:
            errors.append((0, exc))
        for i, (args, _) in enumerate(stack):
            try:
                read()  # QUEUED
            except redis.ResponseError as exc:
                me.annotate_exception(exc, i + 1, args)
                errors.append((i, exc))
        try:
            response = read()
        except ExecAbortError:
            if errors:
                raise errors[0][1] from None
            raise
        self.watching = False  # EXEC ends every WATCH
        if response is None:
            raise redis.WatchError("Watched variable changed.")
        for i, error in errors:
            response.insert(i, error)
        if len(response) != len(stack):
            conn.disconnect()
            raise redis.ResponseError("Wrong number of response items from pipeline execution")
        if raise_on_error:
            me.raise_first_error(stack, response)
        return self._callbacks(stack, response)

    def _execute_pipeline(self, conn: Any, stack: list[Any], raise_on_error: bool) -> list[Any]:
        me: Any = self
        if _unusual(stack):
            base: Any = super()
            return list(base._execute_pipeline(conn, stack, raise_on_error))
        conn.send_packed_command(pack(conn, [args for args, _ in stack]))
        read = conn.read_response
        response: list[Any] = []
        for _ in stack:
            try:
                response.append(read())
            except redis.ResponseError as exc:
                response.append(exc)
        if raise_on_error:
            me.raise_first_error(stack, response)
        return self._callbacks(stack, response)

    def _callbacks(self, stack: list[Any], response: list[Any]) -> list[Any]:
        callbacks: Any = self.response_callbacks
        data = []
        for reply, (args, options) in zip(response, stack, strict=True):
            if not isinstance(reply, Exception):
                callback = callbacks.get(args[0])
                if callback is not None:
                    if options:
                        options.pop("keys", None)
                    reply = callback(reply, **options)
            data.append(reply)
        return data


def lean_pipeline(client: Any, *, transaction: bool) -> Any:
    """A :class:`LeanPipeline` on a plain client's pool; a Cluster client's own pipeline otherwise."""
    if isinstance(client, redis.Redis) and not isinstance(client, redis.client.Pipeline):
        return LeanPipeline(client.connection_pool, client.response_callbacks, transaction, None)
    return client.pipeline(transaction=transaction)
