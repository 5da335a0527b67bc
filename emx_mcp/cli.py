"""Command line: `emx-mcp serve` (more subcommands arrive with later features)."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Sequence
from typing import Any

import structlog
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext

from emx_mcp.config import Settings
from emx_mcp.embedding import SentenceTransformerEncoder
from emx_mcp.service import MemoryService


def configure_logging(level: str) -> None:
    """structlog and stdlib logging, both to stderr: under stdio, stdout belongs to the protocol."""
    numeric = logging.getLevelNamesMapping()[level]
    logging.basicConfig(stream=sys.stderr, level=numeric, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "sentence_transformers", "transformers", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        key: value for key in ("data_dir", "model", "log_level") if (value := getattr(args, key, None))
    }
    return Settings(**overrides)


class WarmUpAfterFirstRequest:
    """Server middleware that opens the store and loads the model once the first request is answered.

    The handshake must not wait for the model (several seconds), nor share the interpreter with
    its import: warming up starts shortly after the first answer (the handshake) has gone out.
    """

    def __init__(self, service: MemoryService, delay: float = 0.1) -> None:
        self._service = service
        self._delay = delay
        self._started = False

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        result = await call_next(ctx)
        if not self._started:
            self._started = True
            timer = threading.Timer(self._delay, self._warm_up)
            timer.daemon = True
            timer.start()
        return result

    def _warm_up(self) -> None:
        try:
            self._service.warm_up()
        except Exception:
            # Tool calls open the store again and report the cause to the client.
            structlog.get_logger(__name__).exception("warm-up failed")


def serve(settings: Settings) -> None:
    from emx_mcp.server import build_server

    service = MemoryService(settings, SentenceTransformerEncoder(settings.model))
    server = build_server(service)
    server.middleware.append(WarmUpAfterFirstRequest(service))
    try:
        server.run("stdio")
    finally:
        service.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emx-mcp", description="Episodic memory MCP server.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_p = sub.add_parser("serve", help="run the MCP server over stdio")
    serve_p.add_argument("--data-dir", help="overrides EMX_DATA_DIR")
    serve_p.add_argument("--model", help="overrides EMX_MODEL")
    serve_p.add_argument(
        "--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="overrides EMX_LOG_LEVEL"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = _settings(args)
    except ValueError as exc:
        print(f"emx-mcp: invalid settings: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    if args.command == "serve":
        serve(settings)
    return 0
