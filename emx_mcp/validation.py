"""Input checks shared by every entry point. Each failure raises InvalidInput with the remedy."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from emx_mcp.errors import InvalidInput

MAX_K = 100
MAX_SESSION_CHARS = 256
MAX_ID_CHARS = 128
MAX_METADATA_BYTES = 64 * 1024
_NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _check_utf8(value: str, what: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(
            f"{what} is not valid UTF-8 (it contains a lone surrogate at index {exc.start}); "
            "send well-formed Unicode text."
        ) from None


_TYPE_NAMES = {str: "a string", int: "an integer"}


def _check_type(value: object, kind: type, what: str) -> None:
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InvalidInput(f"{what} must be {_TYPE_NAMES[kind]}; got {type(value).__name__}.")


def text(value: object, max_chars: int, what: str = "text") -> str:
    _check_type(value, str, what)
    assert isinstance(value, str)
    if not value.strip():
        raise InvalidInput(f"{what} is empty; send the text to store or search for.")
    if len(value) > max_chars:
        raise InvalidInput(
            f"{what} has {len(value):,} characters; the limit is {max_chars:,} (EMX_MAX_TEXT_CHARS). "
            "Split it into several calls."
        )
    _check_utf8(value, what)
    return value


def namespace(value: object) -> str:
    _check_type(value, str, "namespace")
    assert isinstance(value, str)
    if not _NAMESPACE.fullmatch(value):
        raise InvalidInput(
            f"namespace {value[:80]!r} is not allowed; use 1-64 characters from letters, digits, "
            "'_', '.', '-', starting with a letter or digit."
        )
    return value


def session(value: object) -> str:
    _check_type(value, str, "session")
    assert isinstance(value, str)
    if not value.strip():
        raise InvalidInput("session is empty; omit it to start a new session, or pass an existing id.")
    if len(value) > MAX_SESSION_CHARS:
        raise InvalidInput(f"session has {len(value)} characters; the limit is {MAX_SESSION_CHARS}.")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise InvalidInput("session contains control characters; use printable text.")
    _check_utf8(value, "session")
    return value


def event_id(value: object, what: str = "id") -> str:
    """An event id as the caller gives it: printable text of at most 128 characters."""
    _check_type(value, str, what)
    assert isinstance(value, str)
    if not 1 <= len(value) <= MAX_ID_CHARS or not value.isprintable():
        raise InvalidInput(
            f"{what} {value[:80]!r} is not an event id: ids are 1-{MAX_ID_CHARS} printable characters, "
            "as `remember` and `recall` return them."
        )
    _check_utf8(value, what)
    return value


def k(value: object) -> int:
    _check_type(value, int, "k")
    assert isinstance(value, int)
    if not 1 <= value <= MAX_K:
        raise InvalidInput(f"k must be between 1 and {MAX_K}; got {value}.")
    return value


def timestamp(value: object, what: str = "timestamp") -> str:
    """Parse ISO 8601 and return it in UTC as 'YYYY-MM-DDTHH:MM:SS.ffffffZ'. No zone means UTC."""
    _check_type(value, str, what)
    assert isinstance(value, str)
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidInput(
            f"{what} {value[:80]!r} is not ISO 8601; use e.g. '2026-11-21T13:45:00Z'."
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return format_timestamp(parsed)


def format_timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def now() -> str:
    return format_timestamp(datetime.now(UTC))


def metadata(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(f"metadata must be a JSON object; got {type(value).__name__}.")
    try:
        encoded = json.dumps(value, ensure_ascii=False, allow_nan=False, sort_keys=True)
        encoded.encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise InvalidInput(
            f"metadata must be plain JSON (strings, numbers, booleans, null, lists, objects): {exc}."
        ) from None
    if len(encoded.encode("utf-8")) > MAX_METADATA_BYTES:
        raise InvalidInput(f"metadata is larger than {MAX_METADATA_BYTES // 1024} KiB once encoded as JSON.")
    for key in value:
        if not isinstance(key, str):
            raise InvalidInput("metadata keys must be strings.")
    result: dict[str, Any] = json.loads(encoded)
    return result


MAX_CONTIGUITY = 5


def contiguity(value: object) -> int:
    _check_type(value, int, "contiguity")
    assert isinstance(value, int)
    if not 0 <= value <= MAX_CONTIGUITY:
        raise InvalidInput(f"contiguity must be between 0 and {MAX_CONTIGUITY}; got {value}.")
    return value


def metadata_filter(value: object) -> dict[str, Any]:
    """Top-level key -> JSON value to match exactly; keys may not contain quotes or backslashes."""
    checked = metadata(value)
    for key in checked:
        if '"' in key or "\\" in key or any(ord(ch) < 32 for ch in key):
            raise InvalidInput(
                f"metadata filter key {key[:40]!r} may not contain quotes, backslashes or control characters."
            )
    return checked
