"""The composition root: settings -> store, encoder, service -> MCP server, and the service's lifetime.

Nothing happens at import. `serve` is the one place a server starts, warms up and stops.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

import anyio
import structlog

from emx_mcp.coalescing import CoalescingEncoder
from emx_mcp.config import Settings
from emx_mcp.embedding import Encoder, SentenceTransformerEncoder
from emx_mcp.onnx_runtime import OnnxEncoder, OnnxOrTorch
from emx_mcp.service import MemoryService
from emx_mcp.storage.embedded import EmbeddedStore
from emx_mcp.storage.store import Store

log = structlog.get_logger(__name__)


def build_encoder(settings: Settings) -> Encoder:
    """The configured encoder: ONNX Runtime (or torch), its requests coalesced into shared batches."""
    torch = SentenceTransformerEncoder(settings.model)
    base: Encoder = torch
    if settings.encoder_backend == "onnx":
        onnx = OnnxEncoder(settings.model, settings.data_dir / "models", settings.model_id)
        base = OnnxOrTorch(onnx, torch)
    elif settings.encoder_backend == "onnx-int8":  # no fallback: torch's vectors are another space
        base = OnnxEncoder(settings.model, settings.data_dir / "models", settings.model_id, int8=True)
    return CoalescingEncoder(base) if settings.encoder_coalesce else base


def build_service(settings: Settings, encoder: Encoder | None = None) -> MemoryService:
    """The service over the store `settings` describe; the model loads only when first needed."""
    return MemoryService(settings, encoder or build_encoder(settings), build_store(settings))


def build_store(settings: Settings) -> Store:
    """The configured store: the embedded one, or a Milvus collection."""
    if settings.store == "milvus":
        from emx_mcp.storage.milvus import MilvusStore

        return MilvusStore(settings)
    return EmbeddedStore(settings)


class WarmUp:
    """Opens the store and loads the model in a background thread as soon as the server starts.

    The handshake does not wait for it; the first tool call waits only for what is left.
    """

    def __init__(self, service: MemoryService) -> None:
        self._service = service
        self._thread = threading.Thread(target=self._run, name="emx-warm-up", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        """Wait for a warm-up in progress: exiting while a thread is inside the model aborts the process."""
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
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
    warm_up = WarmUp(service)
    warm_up.start()
    # SIGTERM is how clients and service managers stop a server. uvicorn handles it itself, then
    # re-raises it to this handler once its own shutdown is done.
    signal.signal(signal.SIGTERM, _terminate)
    terminated = False
    try:
        if settings.transport == "stdio":
            anyio.run(serve_stdio, server)
        else:
            path = "/mcp" if settings.transport == "http" else "/sse"
            modes = ["bearer token"] if settings.auth_token is not None else []
            modes += ["oauth (JWT access tokens)"] if settings.oauth else []
            auth = " and ".join(modes) or "none (loopback only)"
            log.info("serving", transport=settings.transport, url=base_url(settings) + path, auth=auth)
            from emx_mcp import browser

            log.info("memory browser", url=base_url(settings) + "/ui")
            serve_network(server, settings, browser.routes(service, settings))
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
