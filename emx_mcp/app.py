"""The composition root: settings -> store, encoder, service -> MCP server, and the service's lifetime.

Nothing happens at import. `serve` is the one place a server starts, warms up and stops.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import Any

import anyio
import structlog
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext

from emx_mcp.config import Settings
from emx_mcp.embedding import Encoder, SentenceTransformerEncoder
from emx_mcp.service import MemoryService
from emx_mcp.storage.embedded import EmbeddedStore

log = structlog.get_logger(__name__)


def build_service(settings: Settings, encoder: Encoder | None = None) -> MemoryService:
    """The service over the store `settings` describe; the model loads only when first needed."""
    return MemoryService(
        settings, encoder or SentenceTransformerEncoder(settings.model), EmbeddedStore(settings)
    )


class WarmUpAfterFirstRequest:
    """Server middleware that opens the store and loads the model once the first request is answered.

    The handshake must not wait for the model (several seconds), nor share the interpreter with
    its import: warming up starts shortly after the first answer (the handshake) has gone out.
    """

    def __init__(self, service: MemoryService, delay: float = 0.1) -> None:
        self._service = service
        self._delay = delay
        self._timer: threading.Timer | None = None

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        result = await call_next(ctx)
        if self._timer is None:
            self._timer = threading.Timer(self._delay, self._warm_up)
            self._timer.start()
        return result

    def join(self) -> None:
        """Wait for a warm-up in progress: exiting while a thread is inside torch aborts the process."""
        if self._timer is not None:
            self._timer.join()

    def _warm_up(self) -> None:
        try:
            self._service.warm_up()
        except Exception:
            # Tool calls open the store again and report the cause to the client.
            log.exception("warm-up failed")


class Terminated(SystemExit):
    """Raised in the main thread by SIGTERM, so that serving unwinds and the store is closed."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated(0)


def serve(settings: Settings) -> None:
    """Serve over the configured transport until stopped; close the store on the way out."""
    from emx_mcp.server import build_server
    from emx_mcp.transport import base_url, serve_network, serve_stdio

    service = build_service(settings)
    server = build_server(service)
    warm_up = WarmUpAfterFirstRequest(service)
    server.middleware.append(warm_up)
    # SIGTERM is how clients and service managers stop a server. uvicorn handles it itself, then
    # re-raises it to this handler once its own shutdown is done.
    signal.signal(signal.SIGTERM, _terminate)
    terminated = False
    try:
        if settings.transport == "stdio":
            anyio.run(serve_stdio, server)
        else:
            path = "/mcp" if settings.transport == "http" else "/sse"
            auth = "bearer token" if settings.auth_token is not None else "none (loopback only)"
            log.info("serving", transport=settings.transport, url=base_url(settings) + path, auth=auth)
            serve_network(server, settings)
    except Terminated:
        terminated = True
    finally:
        warm_up.join()
        service.close()
    if terminated:
        # Everything is on disk (the log commits per call; close wrote the final snapshot). A
        # worker thread of the interrupted event loop would hold up a normal interpreter exit.
        log.info("stopped by SIGTERM; store closed")
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0)
