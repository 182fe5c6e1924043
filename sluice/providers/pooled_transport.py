"""An httpx transport on aiohttp's connection pool, for the model calls of the worker.

httpx stays the client (one API for timeouts, errors, streaming and test doubles), but its
default transport, httpcore over anyio, costs more CPU per call than aiohttp's pool does.
Measured against the model simulator (`bench/model_transport.py`): 0.65 ms of the worker's CPU
per call with one call in flight in its pool, 1.23 ms with 16 (it scans every connection on each
request, which is why calls used to be spread over many small pools), against 0.43 and 0.28 ms
through this transport, which hands the request to aiohttp's pool. Every failure is raised as
the httpx exception the callers already handle.
"""

from __future__ import annotations

import ssl
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx

READ_CHUNK = 65536


class PooledTransport(httpx.AsyncBaseTransport):
    """Sends httpx requests through one aiohttp session (created in the running loop on first
    use). Bodies are passed through undecoded, so httpx decodes them as it always does."""

    def __init__(self, *, max_connections: int, tls: ssl.SSLContext | None = None) -> None:
        self._max_connections = max_connections
        self._tls = tls
        self._session: aiohttp.ClientSession | None = None
        # HTTP(S)_PROXY and NO_PROXY, as httpx's own transport honours them: read once, and the
        # answer kept per model server (a handful of hosts), not worked out on every call.
        self._environment_proxies = urllib.request.getproxies()
        self._proxy_by_host: dict[tuple[str, str], str | None] = {}

    def _open_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                limit_per_host=0,
                ssl=self._tls if self._tls is not None else True,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,  # httpx decodes by Content-Encoding itself
                skip_auto_headers=("User-Agent",),  # httpx's own is sent
                raise_for_status=False,
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._open_session()
        body = await request.aread()
        headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers.raw]
        try:
            reply = await session.request(
                request.method,
                str(request.url),
                data=body or None,
                headers=headers,
                timeout=_timeout_of(request),
                allow_redirects=False,
                proxy=self._proxy_for(request.url),
            )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise _as_httpx_error(exc, request, connecting=True) from exc
        return httpx.Response(
            reply.status,
            headers=[(name, value) for name, value in reply.raw_headers],
            stream=_ReplyStream(reply, request),
            extensions={"http_version": b"HTTP/1.1"},
            request=request,
        )

    def _proxy_for(self, url: httpx.URL) -> str | None:
        key = (url.scheme, url.host)
        if key not in self._proxy_by_host:
            proxy = self._environment_proxies.get(url.scheme)
            if proxy and urllib.request.proxy_bypass(url.host):  # NO_PROXY
                proxy = None
            self._proxy_by_host[key] = proxy
        return self._proxy_by_host[key]

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _ReplyStream(httpx.AsyncByteStream):
    """A reply's body as httpx reads it; closing it early drops the connection, so a model
    whose stream is abandoned stops generating."""

    def __init__(self, reply: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._reply = reply
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._reply.content.iter_chunked(READ_CHUNK):
                yield chunk
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise _as_httpx_error(exc, self._request, connecting=False) from exc

    async def aclose(self) -> None:
        if self._reply.content.at_eof():
            self._reply.release()  # read to the end: the connection goes back to the pool
        else:
            self._reply.close()


def _timeout_of(request: httpx.Request) -> aiohttp.ClientTimeout:
    """httpx's per-request timeouts (connect, read, write, pool) as aiohttp's."""
    limits: dict[str, Any] = request.extensions.get("timeout", {})
    return aiohttp.ClientTimeout(
        total=None,
        connect=limits.get("pool"),  # waiting for a free connection, as httpx's pool timeout
        sock_connect=limits.get("connect"),
        sock_read=limits.get("read"),
    )


def _as_httpx_error(exc: BaseException, request: httpx.Request, *, connecting: bool) -> httpx.TransportError:
    """The httpx exception for an aiohttp failure (or a timeout or socket error under it):
    `connecting` is whether the reply's headers had not arrived yet."""
    message = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, aiohttp.ConnectionTimeoutError):  # no free connection, or no TCP connect
        return httpx.ConnectTimeout(message, request=request)
    if isinstance(exc, aiohttp.ServerTimeoutError | TimeoutError):  # a read went quiet
        return httpx.ReadTimeout(message, request=request)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message, request=request)
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError(message, request=request)
    if connecting:
        return httpx.ConnectError(message, request=request)
    return httpx.ReadError(message, request=request)
