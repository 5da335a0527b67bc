"""Who may do what: scoped tokens, the grant of the caller at hand, and the audit trail's fields.

EMX_AUTH_TOKEN is the admin token: every namespace, every right. `emx-mcp token create` makes
scoped tokens: a name, one or more namespaces (the first is the token's default) and read-only or
not. A token is shown once; the store keeps its name, rights, a random salt and the SHA-256 of
salt and secret, never the token. Tokens are 256-bit random strings, so a salted hash is as good
as a slow one against guessing, and each request can check one in microseconds. A token reads
`emx_<id>_<secret>`: the id finds its record, the secret is compared in constant time.

The token book lives beside the store: `tokens.json` in the data directory, or a shared file in
the Milvus store's meta collection, which every replica reads on every request (so a revoked
token is refused on its next request everywhere).
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from emx_mcp.errors import EmxError
from emx_mcp.files import atomic_writer
from emx_mcp.schemas import check_namespace, now

TOKEN_PATTERN = re.compile(r"emx_([0-9a-f]{8})_([A-Za-z0-9_-]{43})")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# How often a token's last use is written back (a write per request would be a write per call).
LAST_USE_EVERY_S = 60.0


class AccessDenied(EmxError, PermissionError):
    """The caller's token does not open this namespace, or does not allow this action."""


@dataclass(frozen=True, slots=True)
class Grant:
    """What the caller of this request may do: namespaces (None: all) and whether it may write."""

    name: str
    namespaces: tuple[str, ...] | None
    write: bool

    @property
    def default_namespace(self) -> str:
        return self.namespaces[0] if self.namespaces else "default"

    def may_read(self, namespace: str) -> bool:
        return self.namespaces is None or namespace in self.namespaces

    def namespace(self, requested: str | None) -> str:
        """The namespace a call works on: the one asked for if this grant opens it, else refused."""
        if requested is None:
            return self.default_namespace
        if not self.may_read(requested):
            allowed = ", ".join(self.namespaces or ())
            raise AccessDenied(
                f"namespace {requested[:64]!r} is not open to token {self.name!r}; it may use: {allowed}."
            )
        return requested

    def check_write(self, action: str) -> None:
        if not self.write:
            raise AccessDenied(f"token {self.name!r} is read-only: it may not {action}.")

    def visible(self, namespaces: Sequence[str]) -> list[str]:
        return [n for n in namespaces if self.may_read(n)]


# Over stdio, or HTTP without EMX_AUTH_TOKEN, the caller owns the process: everything.
LOCAL = Grant("local", None, True)
ADMIN = Grant("admin", None, True)

# The grant of the tool call, resource read or page being served (set where the request enters).
current_grant: contextvars.ContextVar[Grant] = contextvars.ContextVar("emx_grant", default=LOCAL)


@dataclass
class TokenRecord:
    name: str
    id: str
    salt: str
    sha256: str
    namespaces: list[str]
    read_only: bool
    created: str
    last_used: str | None = None

    def grant(self) -> Grant:
        return Grant(self.name, tuple(self.namespaces), not self.read_only)


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


@contextmanager
def _no_lock() -> Iterator[None]:
    yield


@dataclass
class TokenBook:
    """The scoped tokens, read through `load` and written through `save` (a file, or the Milvus store)."""

    load: Callable[[], bytes | None]
    save: Callable[[bytes], None]
    lock: Callable[[], Any] = _no_lock
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _used: dict[str, float] = field(default_factory=dict)

    def records(self) -> list[TokenRecord]:
        raw = self.load()
        if not raw:
            return []
        try:
            return [TokenRecord(**item) for item in json.loads(raw)["tokens"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise EmxError(
                f"the token book is damaged ({exc}); revoke and create the tokens again."
            ) from None

    def _write(self, records: list[TokenRecord]) -> None:
        self.save(json.dumps({"tokens": [asdict(r) for r in records]}, indent=1).encode())

    def create(self, name: str, namespaces: Sequence[str], read_only: bool) -> str:
        """A new token for `name` (printed once by the caller; only its salted hash is kept)."""
        if not NAME_PATTERN.fullmatch(name):
            raise EmxError(f"token name {name[:64]!r}: use 1-64 of letters, digits, '_', '.', '-'.")
        if not namespaces:
            raise EmxError("a token needs at least one --namespace.")
        checked = [check_namespace(n) for n in dict.fromkeys(namespaces)]
        secret = secrets.token_urlsafe(32)
        token_id = secrets.token_hex(4)
        salt = secrets.token_hex(16)
        record = TokenRecord(name, token_id, salt, _digest(salt, secret), checked, read_only, now())
        with self.lock():
            records = self.records()
            if any(r.name == name for r in records):
                raise EmxError(f"a token named {name!r} exists; revoke it first or choose another name.")
            self._write([*records, record])
        return f"emx_{token_id}_{secret}"

    def revoke(self, name: str) -> None:
        with self.lock():
            records = self.records()
            kept = [r for r in records if r.name != name]
            if len(kept) == len(records):
                raise EmxError(f"no token named {name!r}; `emx-mcp token list` shows them.")
            self._write(kept)

    def verify(self, token: str) -> TokenRecord | None:
        """The record of a valid scoped token, or None. The secret is compared in constant time."""
        match = TOKEN_PATTERN.fullmatch(token)
        if match is None:
            return None
        token_id, secret = match.groups()
        record = next((r for r in self.records() if r.id == token_id), None)
        if record is None:
            hmac.compare_digest(secret, secret)  # the same work whether or not the id exists
            return None
        if not hmac.compare_digest(_digest(record.salt, secret), record.sha256):
            return None
        self._note_use(record)
        return record

    def by_id(self, token_id: str) -> TokenRecord | None:
        return next((r for r in self.records() if r.id == token_id), None)

    def _note_use(self, record: TokenRecord) -> None:
        moment = time.monotonic()
        with self._lock:
            if moment - self._used.get(record.id, -LAST_USE_EVERY_S) < LAST_USE_EVERY_S:
                return
            self._used[record.id] = moment
        try:
            with self.lock():
                records = self.records()
                for r in records:
                    if r.id == record.id:
                        r.last_used = now()
                self._write(records)
        except (OSError, EmxError):
            pass  # the last-use column is a convenience; never fail a request for it


def file_book(path: Path) -> TokenBook:
    """Tokens in a JSON file beside the embedded store, changed under a file lock."""
    import fcntl

    @contextmanager
    def locked() -> Iterator[None]:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".lock"), "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def load() -> bytes | None:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def save(data: bytes) -> None:
        with atomic_writer(path) as out:
            out.write(data)
        path.chmod(0o600)

    return TokenBook(load, save, locked)


def shared_book(
    publish: Callable[[str, bytes], None], fetch: Callable[[str, str | None], bytes | None]
) -> TokenBook:
    """Tokens in a shared file of the store (Milvus), which every replica reads on every request.

    Reading asks only whether the file changed (by its SHA-256), so a revocation anywhere is seen
    on the next request everywhere.
    """
    name = "auth/tokens"
    cache: dict[str, Any] = {"sha": None, "data": None}
    guard = threading.Lock()

    def load() -> bytes | None:
        with guard:
            fresh = fetch(name, cache["sha"])
            if fresh is not None:
                cache.update(sha=hashlib.sha256(fresh).hexdigest(), data=fresh)
            data: bytes | None = cache["data"]
            return data

    def save(data: bytes) -> None:
        publish(name, data)

    return TokenBook(load, save)
