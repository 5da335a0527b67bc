"""Command line: `emx-mcp serve | health | export | import | train-lvm | token | audit | milvus-lite`."""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog

from emx_mcp.app import build_service
from emx_mcp.config import Settings
from emx_mcp.embedding import model_problem
from emx_mcp.errors import EmxError
from emx_mcp.schemas import HealthRequest, namespace
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


OVERRIDABLE = (
    "data_dir",
    "model",
    "log_level",
    "transport",
    "host",
    "port",
    "store",
    "milvus_uri",
    "milvus_collection",
)


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the environment, with the command line's options on top."""
    overrides = {key: value for key in OVERRIDABLE if (value := getattr(args, key, None)) is not None}
    return Settings(**overrides)


def _open_service(settings: Settings) -> MemoryService:
    """The store the command works on. The model loads only if a command needs to embed text."""
    service = build_service(settings)
    service.open()
    return service


def health(settings: Settings, args: argparse.Namespace) -> int:
    """Print the index_health report of a namespace: the tool's JSON, or a few readable lines."""
    from emx_mcp.health import render

    request = HealthRequest(namespace=namespace(args.namespace))
    service = _open_service(settings)
    try:
        service.wait_for_integrity_check()
        # The encoder is a serving process's; this one never loads it, so says nothing of it.
        report = service.health(request).model_copy(update={"encoder": None})
    finally:
        service.close()
    print(report.model_dump_json(indent=2) if args.json else render(report))
    return 0 if report.status == "ok" else 1


def export(settings: Settings, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from emx_mcp.transfer import export_jsonl

    chosen = None if args.namespace is None else namespace(args.namespace)
    to_stdout = args.out == "-"
    if to_stdout:
        scratch = tempfile.TemporaryDirectory(prefix="emx-export-")
        out = Path(scratch.name) / "export.jsonl"
    else:
        out = Path(args.out)
        if not out.parent.is_dir():
            print(f"emx-mcp: the folder {out.parent} does not exist; create it first.", file=sys.stderr)
            return 2
    service = _open_service(settings)
    try:
        total = service.count(chosen)
        with tqdm(total=total, desc="exporting", unit="event", file=sys.stderr) as bar:
            count = export_jsonl(service, out, chosen, embeddings=not args.no_embeddings, progress=bar.update)
    finally:
        service.close()
    if to_stdout:  # `--out -`: the lines on stdout, the summary on stderr
        with out.open("rb") as fh:
            shutil.copyfileobj(fh, sys.stdout.buffer)
        sys.stdout.flush()
        scratch.cleanup()
        print(f"exported {count:,} events to stdout", file=sys.stderr)
        return 0
    print(f"exported {count:,} events to {args.out}")
    return 0


def import_(settings: Settings, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from emx_mcp.transfer import import_jsonl

    path = Path(args.file)
    if not path.is_file():
        print(f"emx-mcp: {path} is not a file", file=sys.stderr)
        return 2
    service = _open_service(settings)
    try:
        # Two passes over the file: checking every line, then storing.
        with tqdm(
            total=2 * path.stat().st_size, desc="importing", unit="B", unit_scale=True, file=sys.stderr
        ) as bar:
            report = import_jsonl(service, path, args.on_error, progress=bar.update)
    finally:
        service.close()
    for line, problem in report.errors:
        print(f"{path}:{line}: {problem}", file=sys.stderr)
    if report.error_count > len(report.errors):
        print(f"... and {report.error_count - len(report.errors)} more malformed lines", file=sys.stderr)
    if report.aborted:
        print(
            f"emx-mcp: {report.error_count} of {report.lines} lines are malformed; nothing was imported. "
            "Fix them, or pass --on-error skip to import the rest.",
            file=sys.stderr,
        )
        return 1
    print(
        f"read {report.lines:,} lines: imported {report.imported:,}, already present "
        f"{report.already_present:,}, embedded again {report.reembedded:,}, skipped as malformed "
        f"{report.skipped:,}, forgotten here since and not restored {report.forgotten:,}"
    )
    return 0


def train_lvm(settings: Settings, args: argparse.Namespace) -> int:
    """Train the next-episode predictor of a namespace and print model vs baselines."""
    from tqdm import tqdm

    from emx_mcp.lvm.train import TrainConfig

    checked = namespace(args.namespace)
    problems = [
        f"--{name} must be {rule}; got {value}"
        for name, value, ok, rule in (
            ("context", args.context, 1 <= args.context <= 256, "between 1 and 256"),
            ("epochs", args.epochs, 1 <= args.epochs <= 1000, "between 1 and 1000"),
            ("patience", args.patience, 1 <= args.patience <= 100, "between 1 and 100"),
            ("alpha", args.alpha, 0.0 <= args.alpha <= 10.0, "between 0 and 10"),
        )
        if not ok
    ]
    if problems:
        print("emx-mcp: " + "; ".join(problems) + ".", file=sys.stderr)
        return 2
    config = TrainConfig(context=args.context, epochs=args.epochs, patience=args.patience, alpha=args.alpha)
    service = _open_service(settings)
    bar = tqdm(total=config.epochs, desc="training", unit="epoch", file=sys.stderr)

    def progress(message: str) -> None:
        bar.update(1)
        bar.set_postfix_str(message.split(": ", 1)[1])

    try:
        outcome, path = service.train_predictor(checked, config, progress)
    finally:
        bar.close()
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


def _common_options(parser: argparse.ArgumentParser, default: object = None) -> None:
    """Options every command takes, before or after the command's name.

    The subcommands' copies default to SUPPRESS, so that an option given before the command is
    not reset by the subparser.
    """
    parser.add_argument("--data-dir", default=default, help="overrides EMX_DATA_DIR")
    parser.add_argument("--model", default=default, help="overrides EMX_MODEL")
    parser.add_argument(
        "--log-level",
        default=default,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="overrides EMX_LOG_LEVEL",
    )
    parser.add_argument(
        "--store", default=default, choices=["embedded", "milvus"], help="overrides EMX_STORE"
    )
    parser.add_argument("--milvus-uri", default=default, help="overrides EMX_MILVUS_URI")
    parser.add_argument("--milvus-collection", default=default, help="overrides EMX_MILVUS_COLLECTION")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emx-mcp", description="Episodic memory MCP server.")
    _common_options(parser)
    sub = parser.add_subparsers(dest="command", required=True)

    serve_ = sub.add_parser("serve", help="run the MCP server (stdio by default)")
    _common_options(serve_, argparse.SUPPRESS)
    serve_.add_argument("--transport", choices=["stdio", "sse", "http"], help="overrides EMX_TRANSPORT")
    serve_.add_argument("--host", help="overrides EMX_HOST (HTTP/SSE)")
    serve_.add_argument("--port", type=int, help="overrides EMX_PORT (HTTP/SSE)")

    health_ = sub.add_parser("health", help="print the index_health report of a namespace")
    _common_options(health_, argparse.SUPPRESS)
    health_.add_argument("--namespace", default="default")
    health_.add_argument(
        "--json", action="store_true", help="print the report as JSON, as the tool returns it"
    )

    export_ = sub.add_parser("export", help="write memories to a JSON-lines file")
    _common_options(export_, argparse.SUPPRESS)
    export_.add_argument(
        "--out", required=True, help="the file to write (replaced when complete), or - for standard output"
    )
    export_.add_argument("--namespace", help="only this namespace (default: all)")
    export_.add_argument("--no-embeddings", action="store_true", help="leave the vectors out (smaller file)")

    import__ = sub.add_parser("import", help="read memories from a JSON-lines file written by export")
    _common_options(import__, argparse.SUPPRESS)
    import__.add_argument("file")
    import__.add_argument(
        "--on-error",
        choices=["abort", "skip"],
        default="abort",
        help="on malformed lines: import nothing (abort, the default) or everything else (skip)",
    )

    lvm = sub.add_parser("train-lvm", help="train the next-episode predictor used by predict_next")
    _common_options(lvm, argparse.SUPPRESS)
    lvm.add_argument("--namespace", default="default")
    lvm.add_argument("--context", type=int, default=16, help="episodes of context (default 16)")
    lvm.add_argument("--epochs", type=int, default=20, help="at most this many epochs (default 20)")
    lvm.add_argument("--patience", type=int, default=3, help="stop after this many epochs without gain")
    lvm.add_argument(
        "--alpha",
        type=float,
        default=0.05,
        help="weight of the InfoNCE term over the whole training memory (default 0.05)",
    )

    token_ = sub.add_parser("token", help="scoped tokens for the HTTP transports: create, list, revoke")
    _common_options(token_, argparse.SUPPRESS)
    actions = token_.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="make a token and print it once on stdout")
    _common_options(create, argparse.SUPPRESS)
    create.add_argument("--name", required=True, help="who or what holds it (shown in logs and the audit)")
    create.add_argument(
        "--namespace",
        action="append",
        required=True,
        help="a namespace it opens (repeat; the first is its default)",
    )
    create.add_argument("--read-only", action="store_true", help="recall only: no remember or forget")
    listing = actions.add_parser(
        "list", help="names, namespaces, rights, creation and last use (never tokens)"
    )
    _common_options(listing, argparse.SUPPRESS)
    revoke = actions.add_parser("revoke", help="refuse the token from its next request on")
    _common_options(revoke, argparse.SUPPRESS)
    revoke.add_argument("name")

    audit_ = sub.add_parser("audit", help="who forgot what: the forget records kept in the store")
    _common_options(audit_, argparse.SUPPRESS)
    audit_.add_argument("--namespace", help="only this namespace (default: all)")
    audit_.add_argument(
        "--limit", type=int, default=100, help="newest first, at most this many (default 100)"
    )

    lite = sub.add_parser(
        "milvus-lite",
        help="serve a Milvus Lite file over TCP, so that several emx-mcp replicas share it (tests, one host)",
    )
    lite.add_argument("--db", required=True, help="the Milvus Lite file (name: letters, digits, . - _)")
    lite.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    lite.add_argument("--port", type=int, default=19530, help="port (default 19530)")
    return parser


def milvus_lite(args: argparse.Namespace) -> int:
    """Run Milvus Lite's own server on `--db` until SIGTERM or Ctrl-C; replicas use EMX_MILVUS_URI=http://..."""
    import signal
    import time

    try:
        from milvus_lite.server import Server
    except ImportError:
        print("emx-mcp: milvus-lite is not installed: pip install 'emx-mcp[milvus]'", file=sys.stderr)
        return 2
    db = Path(args.db).absolute()
    db.parent.mkdir(parents=True, exist_ok=True)
    server = Server(str(db), address=f"{args.host}:{args.port}")
    if not server.init() or not server.start():
        print(f"emx-mcp: Milvus Lite did not start on {db} (is another process serving it?)", file=sys.stderr)
        return 1
    print(f"Milvus Lite serving {db} at http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    stop = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while not stop and server._p is not None and server._p.poll() is None:
            time.sleep(0.2)
    finally:
        server.stop()
    return 0


def token(settings: Settings, args: argparse.Namespace) -> int:
    """Create, list or revoke scoped tokens; a new token is printed once, on stdout."""
    service = build_service(settings)  # opened only if the tokens live in the store (Milvus)
    try:
        book = service.tokens
        if args.action == "create":
            print(book.create(args.name, args.namespace, args.read_only))
            rights = "read-only" if args.read_only else "read and write"
            print(
                f"token {args.name!r}: {rights} in {', '.join(args.namespace)} "
                f"(default {args.namespace[0]}); it is shown only now.",
                file=sys.stderr,
            )
        elif args.action == "list":
            for r in book.records():
                rights = "read-only" if r.read_only else "read-write"
                print(
                    f"{r.name}\t{','.join(r.namespaces)}\t{rights}\tcreated {r.created}\t"
                    f"last used {r.last_used or 'never'}"
                )
        else:
            book.revoke(args.name)
            print(f"token {args.name!r} revoked: it is refused from its next request on.", file=sys.stderr)
    finally:
        service.close()
    return 0


def audit(settings: Settings, args: argparse.Namespace) -> int:
    """Print who forgot what, newest first (ids and counts, never text)."""
    ns = None if args.namespace is None else namespace(args.namespace)
    service = _open_service(settings)
    try:
        for note in service.forget_notes(ns, args.limit):
            more = f" (+{note.count - len(note.ids)} more)" if note.count > len(note.ids) else ""
            print(f"{note.at}\t{note.namespace}\t{note.who}\tforgot {note.count}\t{','.join(note.ids)}{more}")
    finally:
        service.close()
    return 0


COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "token": token,
    "audit": audit,
    "health": health,
    "export": export,
    "import": import_,
    "train-lvm": train_lvm,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "milvus-lite":
        return milvus_lite(args)
    try:
        settings = settings_from(args)
    except ValueError as exc:
        print(f"emx-mcp: invalid settings: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    if args.command in ("serve", "import", "train-lvm") and (problem := model_problem(settings.model)):
        print(f"emx-mcp: {problem}", file=sys.stderr)
        return 2
    if args.command == "serve":
        from emx_mcp.app import serve

        serve(settings)
        return 0
    if (
        args.command in ("health", "export")
        and settings.store == "embedded"
        and not settings.db_path.exists()
    ):
        print(
            f"emx-mcp: no memory store at {settings.data_dir} (no {settings.db_path.name}); check --data-dir "
            "or EMX_DATA_DIR. Nothing was created.",
            file=sys.stderr,
        )
        return 2
    try:
        return COMMANDS[args.command](settings, args)
    except EmxError as exc:
        print(f"emx-mcp: {exc}", file=sys.stderr)
        return 1
