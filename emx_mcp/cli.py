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

from emx_mcp import validation
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
        # Looked up per logger, not bound once: whatever sys.stderr is at the time gets the logs.
        logger_factory=lambda *_: structlog.PrintLogger(file=sys.stderr),
        cache_logger_on_first_use=False,
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
            structlog.get_logger(__name__).exception("warm-up failed")


def serve(settings: Settings) -> None:
    from emx_mcp.server import build_server

    service = MemoryService(settings, SentenceTransformerEncoder(settings.model))
    server = build_server(service)
    warm_up = WarmUpAfterFirstRequest(service)
    server.middleware.append(warm_up)
    try:
        server.run("stdio")
    finally:
        warm_up.join()
        service.close()


def train_lvm(settings: Settings, args: argparse.Namespace) -> int:
    """Train the next-episode predictor of a namespace and print model vs baselines."""
    from tqdm import tqdm

    from emx_mcp.errors import EmxError
    from emx_mcp.lvm import train
    from emx_mcp.lvm.data import Session

    service = MemoryService(settings, SentenceTransformerEncoder(settings.model))
    service.open()
    try:
        namespace = validation.namespace(args.namespace)
        sessions = [Session(n, s, v) for n, s, v in service.event_log.sessions(namespace)]
        config = train.TrainConfig(context=args.context, epochs=args.epochs, patience=args.patience)
        bar = tqdm(total=config.epochs, desc="training", unit="epoch", file=sys.stderr)

        def progress(message: str) -> None:
            bar.update(1)
            bar.set_postfix_str(message.split(": ", 1)[1])

        try:
            model, outcome = train.train(sessions, config, progress)
        except EmxError as exc:
            print(f"emx-mcp: {exc}", file=sys.stderr)
            return 1
        finally:
            bar.close()
        path = service.predictors.path(namespace)
        path.parent.mkdir(parents=True, exist_ok=True)
        train.save(path, model, outcome, service.encoder.model_id, config)
    finally:
        service.close()
    print(format_outcome(outcome))
    print(f"\ncheckpoint: {path}\nevaluation: {path.with_suffix('.eval.json')}")
    return 0


def format_outcome(outcome: Any) -> str:
    rows = [
        f"{outcome.train_sessions} training / {outcome.validation_sessions} validation sessions "
        f"({outcome.train_windows} / {outcome.validation_windows} examples); "
        f"best epoch {outcome.best_epoch}; {outcome.seconds} s",
        "",
        "| method (validation) | hit@1 | hit@5 | hit@10 | MRR | in-batch hit@5 |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, m in outcome.metrics.items():
        rows.append(
            f"| {name} | {m['hit@1']:.4f} | {m['hit@5']:.4f} | {m['hit@10']:.4f} | {m['mrr']:.4f} | "
            f"{m['in_batch_hit@5']:.4f} |"
        )
    weight = f" (weight {outcome.blend_weight})" if outcome.blend_weight not in (None, 1.0) else ""
    rows.append(f"\npredict_next will use: {outcome.method}{weight}")
    return "\n".join(rows)


def _common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="overrides EMX_DATA_DIR")
    parser.add_argument("--model", help="overrides EMX_MODEL")
    parser.add_argument(
        "--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="overrides EMX_LOG_LEVEL"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emx-mcp", description="Episodic memory MCP server.")
    sub = parser.add_subparsers(dest="command", required=True)
    _common_options(sub.add_parser("serve", help="run the MCP server over stdio"))
    lvm = sub.add_parser("train-lvm", help="train the next-episode predictor used by predict_next")
    _common_options(lvm)
    lvm.add_argument("--namespace", default="default")
    lvm.add_argument("--context", type=int, default=16, help="episodes of context (default 16)")
    lvm.add_argument("--epochs", type=int, default=20, help="at most this many epochs (default 20)")
    lvm.add_argument("--patience", type=int, default=3, help="stop after this many epochs without gain")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = _settings(args)
    except ValueError as exc:
        print(f"emx-mcp: invalid settings: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    if args.command == "train-lvm":
        return train_lvm(settings, args)
    serve(settings)
    return 0
