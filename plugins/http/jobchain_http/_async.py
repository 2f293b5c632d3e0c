"""The ``http://`` backend's asyncio client: one ``httpx.AsyncClient`` per event loop.

It serves the :class:`~jobchain.capabilities.AsyncClient` capability (a
submit, and the record reads of ``wait_async``) with the requests and answer
checks of the synchronous client (:class:`~jobchain_http.client.HttpBackend`'s
``_prepared`` and ``_answered``, the same paths and bodies). Only a backend
that made its own ``httpx.Client`` serves coroutines: one given a client (an
ASGI transport in tests, custom TLS) is served by the App's thread pool, since
its asyncio twin cannot be derived from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import httpx

from jobchain.aio import PerLoop
from jobchain.capabilities import AsyncClient
from jobchain.errors import BackendUnavailableError
from jobchain.model import ChainRecord, Job, JobRecord
from jobchain_http import schema
from jobchain_http._requests import chain_path, enqueue_body, job_path
from jobchain_http.wire import value

if TYPE_CHECKING:
    from jobchain_http.client import HttpBackend

__all__ = ["HttpAsync"]


async def _aclose(client: httpx.AsyncClient) -> None:
    await client.aclose()


class HttpAsync(AsyncClient):
    """The AsyncClient capability of :class:`~jobchain_http.client.HttpBackend` (a mixin of it)."""

    _async_clients: PerLoop[httpx.AsyncClient] | None = None

    def _me(self) -> HttpBackend:
        return self  # type: ignore[return-value]  # mixed into HttpBackend only

    def serves_async(self) -> bool:
        """True when the backend made its own ``httpx.Client`` (its settings make the asyncio one)."""
        return bool(self._me()._owns_client)

    def _clients(self) -> PerLoop[httpx.AsyncClient]:
        if self._async_clients is None:
            me = self._me()

            def make() -> httpx.AsyncClient:
                return httpx.AsyncClient(
                    base_url=me._base,
                    timeout=httpx.Timeout(me.timeout, connect=10.0),
                    limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
                )

            self._async_clients = PerLoop(make, _aclose)
        return self._async_clients

    async def request_async(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        missing_ok: bool = False,
        answer: type[Any] | None = None,
    ) -> Any:
        """:meth:`HttpBackend.request <jobchain_http.client.HttpBackend.request>`, awaited."""
        me = self._me()
        client = await self._clients().get()
        headers, content = me._prepared(body, None)
        try:
            response = await client.request(
                method, me._path(path), content=content, headers=headers, timeout=me.timeout
            )
        except httpx.TransportError as exc:
            raise BackendUnavailableError(me.url, f"{type(exc).__name__}: {exc}") from exc
        return me._answered(response, missing_ok, answer)

    async def enqueue_async(self, jobs: Sequence[Job], chains: Sequence[ChainRecord] = ()) -> None:
        if jobs or chains:
            await self.request_async("POST", "/v1/enqueue", body=enqueue_body(jobs, chains))

    async def enqueue_new_async(self, jobs: Sequence[Job], chains: Sequence[ChainRecord] = ()) -> None:
        await self.enqueue_async(jobs, chains)  # as enqueue_new: the gateway stores fresh ids the same way

    async def get_job_async(self, job_id: str) -> JobRecord | None:
        raw = await self.request_async("GET", job_path(job_id), missing_ok=True, answer=schema.JobRecord)
        return None if raw is None else value(JobRecord.from_wire, raw, "$")

    async def get_chain_async(self, chain_id: str) -> ChainRecord | None:
        path = chain_path(chain_id)
        raw = await self.request_async("GET", path, missing_ok=True, answer=schema.ChainRecord)
        return None if raw is None else value(ChainRecord.from_wire, raw, "$")

    async def close_async(self) -> None:
        await self._clients().close()
