"""What the tools take and return: pydantic models, with every limit in the schema a client sees.

Requests are checked once, where they enter (a tool call, an import line): `parse` turns a
failure into one readable sentence that says what to change. The service receives only checked
values.
"""

from __future__ import annotations

import difflib
import json
import re
import unicodedata
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from dateutil import tz
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import ErrorDetails

from emx_mcp import periods
from emx_mcp.errors import InvalidInput

MAX_K = 100
DEFAULT_K = 5
MAX_SUPERSEDES = 100
MAX_TIME_EXPRESSION_CHARS = 120
MAX_CONTIGUITY = 5
MAX_BATCH_QUERIES = 256
# No tool answer (its text block and structured content together) is larger than this.
MAX_RESPONSE_BYTES = 512 * 1024
# Reading budget of recall: memory text per query, by default and at most.
DEFAULT_MAX_CHARS = 6_000
MAX_CHARS = 50_000
# recall_batch: memory text of all its queries together, at most.
MAX_BATCH_CHARS = 200_000
# Below this score an episode is not related enough to show (see retrieval.py).
DEFAULT_MIN_SCORE = 0.15
MAX_SESSION_CHARS = 256
MAX_ID_CHARS = 128
MAX_FORGET_IDS = 10_000
MAX_METADATA_BYTES = 64 * 1024
DEFAULT_MAX_TEXT_CHARS = 200_000
NAMESPACE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_NAMESPACE = re.compile(NAMESPACE_PATTERN)
# Marks text fields whose maxLength is EMX_MAX_TEXT_CHARS; `tool_schema` fills in the setting.
_TEXT_LIMIT_MARK = "x-emx-limit"


# -- checks -----------------------------------------------------------------------------------


def _check_utf8(value: str, what: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{what} is not valid UTF-8 (it contains a lone surrogate at index {exc.start}); "
            "send well-formed Unicode text."
        ) from None


def _field(info: ValidationInfo) -> str:
    return info.field_name or "text"


def blank(value: str) -> bool:
    """Nothing to read: only whitespace and invisible format characters (zero-width spaces, BOM)."""
    return all(c.isspace() or unicodedata.category(c) == "Cf" for c in value)


def check_text(value: str, info: ValidationInfo) -> str:
    what = _field(info)
    limit = (info.context or {}).get("max_text_chars", DEFAULT_MAX_TEXT_CHARS)
    if blank(value):
        raise ValueError(f"{what} is empty; send the text to store or search for.")
    if len(value) > limit:
        raise ValueError(
            f"{what} has {len(value):,} characters; the limit is {limit:,} (EMX_MAX_TEXT_CHARS). "
            "Split it into several calls."
        )
    _check_utf8(value, what)
    return value


def check_queries(values: list[str], info: ValidationInfo) -> list[str]:
    limit = (info.context or {}).get("max_text_chars", DEFAULT_MAX_TEXT_CHARS)
    for i, value in enumerate(values):
        what = f"queries[{i}]"
        if blank(value):
            raise ValueError(f"{what} is empty; send the text to search for.")
        if len(value) > limit:
            raise ValueError(
                f"{what} has {len(value):,} characters; the limit is {limit:,} (EMX_MAX_TEXT_CHARS)."
            )
        _check_utf8(value, what)
    return values


def check_namespace(value: str) -> str:
    if not _NAMESPACE.fullmatch(value):
        raise ValueError(
            f"namespace {value[:80]!r} is not allowed; use 1-64 characters from letters, digits, "
            "'_', '.', '-', starting with a letter or digit."
        )
    return value


def check_session(value: str) -> str:
    if not value.strip():
        raise ValueError("session is empty; omit it to start a new session, or pass an existing id.")
    if len(value) > MAX_SESSION_CHARS:
        raise ValueError(f"session has {len(value)} characters; the limit is {MAX_SESSION_CHARS}.")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError("session contains control characters; use printable text.")
    _check_utf8(value, "session")
    return value


def check_event_id(value: str, info: ValidationInfo) -> str:
    """An event id as the caller gives it: printable text of at most 128 characters."""
    what = "id" if info.field_name in (None, "ids") else info.field_name
    if not 1 <= len(value) <= MAX_ID_CHARS or not value.isprintable():
        raise ValueError(
            f"{what} {value[:80]!r} is not an event id: ids are 1-{MAX_ID_CHARS} printable characters, "
            "as `remember` and `recall` return them."
        )
    _check_utf8(value, what)
    return value


def format_timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def now() -> str:
    return format_timestamp(datetime.now(UTC))


_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")


def iso_moment(value: str, what: str) -> datetime:
    """ISO 8601 as an aware datetime (no zone means UTC); ValueError with a readable sentence if not.

    A bare date given as `until` means the end of that day, so that "until 2026-11-21" includes
    the whole day; anywhere else it means the day's start.
    """
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{what} {value[:80]!r} is not ISO 8601; use e.g. '2026-11-21T13:45:00Z'.") from None
    if what == "until" and _DATE_ONLY.fullmatch(text):
        parsed = parsed.replace(hour=23, minute=59, second=59, microsecond=999_999)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def utc_text(moment: datetime, what: str, value: str) -> str:
    try:
        return format_timestamp(moment)
    except OverflowError:
        raise ValueError(
            f"{what} {value[:80]!r} is out of range: in UTC it must fall between 0001-01-01 and 9999-12-31."
        ) from None


def parse_timestamp(value: str, info: ValidationInfo) -> str:
    """Parse ISO 8601 and return it in UTC as 'YYYY-MM-DDTHH:MM:SS.ffffffZ'. No zone means UTC."""
    what = info.field_name or "timestamp"
    return utc_text(iso_moment(value, what), what, value)


def check_now(value: str, info: ValidationInfo) -> str:
    """`now` of a recall: ISO 8601, its zone kept (it says where days begin for 'yesterday')."""
    what = info.field_name or "now"
    if len(value) > 64:
        raise ValueError(
            f"{what} has {len(value)} characters; send an ISO 8601 time such as '2026-11-24T10:00:00+01:00'."
        )
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(
            f"{what} {value[:80]!r} is not ISO 8601; use e.g. '2026-11-24T10:00:00+01:00' "
            "(no zone means UTC)."
        ) from None
    utc_text(moment if moment.tzinfo else moment.replace(tzinfo=UTC), what, value)
    return value.strip()


def check_time_expression(value: str, info: ValidationInfo) -> str:
    """since / until as given: ISO 8601 or words such as 'last week'; resolved against `now` later."""
    what = info.field_name or "time"
    if blank(value):
        raise ValueError(f"{what} is empty; omit it, or give a time such as '2026-11-21' or 'last week'.")
    if len(value) > MAX_TIME_EXPRESSION_CHARS:
        raise ValueError(f"{what} has {len(value)} characters; the limit is {MAX_TIME_EXPRESSION_CHARS}.")
    if any(ord(ch) < 32 for ch in value):
        raise ValueError(f"{what} contains control characters; send plain text.")
    _check_utf8(value, what)
    return value


def resolve_edge(value: str, what: str, now: datetime) -> tuple[str, str | None]:
    """since / until as a UTC timestamp, and the expression that named it (None for ISO 8601)."""
    try:
        return utc_text(iso_moment(value, what), what, value), None
    except ValueError as iso_error:
        if _DATE_ONLY.match(value.strip()) or (value.strip()[:4].isdigit() and "T" in value):
            raise iso_error from None
    window = periods.resolve(value, now)
    edge = None if window is None else (window.start if what == "since" else window.end)
    if edge is None:
        raise ValueError(
            f"{what} {value[:80]!r} is not a time I can read; use ISO 8601 such as '2026-11-21T13:45:00Z' "
            f"or words such as {periods.EXAMPLES}."
        )
    return utc_text(edge, what, value), window.text if window else None


def check_metadata(value: dict[str, Any]) -> dict[str, Any]:
    try:
        encoded = json.dumps(value, ensure_ascii=False, allow_nan=False, sort_keys=True)
        encoded.encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"metadata must be plain JSON (strings, numbers, booleans, null, lists, objects): {exc}."
        ) from None
    if len(encoded.encode("utf-8")) > MAX_METADATA_BYTES:
        raise ValueError(f"metadata is larger than {MAX_METADATA_BYTES // 1024} KiB once encoded as JSON.")
    result: dict[str, Any] = json.loads(encoded)
    return result


def check_metadata_filter(value: dict[str, Any]) -> dict[str, Any]:
    """Top-level key -> JSON value to match exactly; keys may not contain quotes or backslashes."""
    checked = check_metadata(value)
    for key in checked:
        if '"' in key or "\\" in key or any(ord(ch) < 32 for ch in key):
            raise ValueError(
                f"metadata filter key {key[:40]!r} may not contain quotes, backslashes or control characters."
            )
    return checked


# -- argument types ---------------------------------------------------------------------------

Text = Annotated[
    str,
    AfterValidator(check_text),
    Field(json_schema_extra={"minLength": 1, "maxLength": DEFAULT_MAX_TEXT_CHARS, _TEXT_LIMIT_MARK: True}),
]
Namespace = Annotated[
    str,
    AfterValidator(check_namespace),
    Field(
        description="Separate memory space; namespaces never see each other.",
        json_schema_extra={"pattern": NAMESPACE_PATTERN, "minLength": 1, "maxLength": 64},
    ),
]
SessionId = Annotated[
    str,
    AfterValidator(check_session),
    Field(json_schema_extra={"minLength": 1, "maxLength": MAX_SESSION_CHARS}),
]
EventId = Annotated[
    str, AfterValidator(check_event_id), Field(json_schema_extra={"minLength": 1, "maxLength": MAX_ID_CHARS})
]
Timestamp = Annotated[str, AfterValidator(parse_timestamp)]
TimeExpression = Annotated[
    str,
    AfterValidator(check_time_expression),
    Field(json_schema_extra={"minLength": 1, "maxLength": MAX_TIME_EXPRESSION_CHARS}),
]
Now = Annotated[str, AfterValidator(check_now), Field(json_schema_extra={"minLength": 1, "maxLength": 64})]
Metadata = Annotated[dict[str, Any], AfterValidator(check_metadata)]
MetadataFilter = Annotated[dict[str, Any], AfterValidator(check_metadata_filter)]
K = Annotated[int, Field(ge=1, le=MAX_K)]
Contiguity = Annotated[int, Field(ge=0, le=MAX_CONTIGUITY)]


class Request(BaseModel):
    """A tool's arguments: strict types (no "5" for 5, no true for 1), no unknown names, checked when made."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class RememberRequest(Request):
    text: Text = Field(description="What happened; 1 to EMX_MAX_TEXT_CHARS characters.")
    session: SessionId | None = Field(
        default=None, description="Groups the events of one task; omit to start a new session."
    )
    metadata: Metadata | None = Field(default=None, description="Any JSON object, kept with every episode.")
    timestamp: Timestamp | None = Field(
        default=None,
        description="When it happened, ISO 8601 such as 2026-11-21T13:45:00Z (default: now); "
        "stored in UTC, no zone means UTC.",
    )
    namespace: Namespace = "default"
    idempotency_key: EventId | None = Field(
        default=None,
        description="Any unique string (1-128 printable characters) for this call: a retry with the same "
        "key and arguments stores nothing new and returns the first call's episodes.",
    )
    supersedes: Annotated[list[EventId], Field(max_length=MAX_SUPERSEDES)] | None = Field(
        default=None,
        description="Ids of episodes this text replaces (a fact that changed: a new address, a new limit). "
        "They stay stored but recall leaves them out unless include_superseded is true. Same namespace.",
    )


class RecallOptions(Request):
    """What to recall and how much: shared by `recall` and `recall_batch`."""

    k: int | None = Field(
        default=None,
        ge=1,
        le=MAX_K,
        description=f"How many matching episodes, best first (1-100; default {DEFAULT_K}, or when listing a "
        "period with an empty query, as many as fit max_chars).",
    )
    session: SessionId | None = Field(default=None, description="Only this session.")
    namespace: Namespace = "default"
    contiguity: Contiguity = Field(
        default=1, description="Neighbours on each side of every match, 0-5 (0: none)."
    )
    since: TimeExpression | None = Field(
        default=None,
        description="Only events at or after this time: ISO 8601, or words such as 'yesterday', "
        "'last week', 'last Tuesday', '3 days ago', 'this morning', 'in March' (the period's start).",
    )
    until: TimeExpression | None = Field(
        default=None,
        description="Only events at or before this time: ISO 8601 or words as for since (the period's end).",
    )
    now: Now | None = Field(
        default=None,
        description="The present for relative times, ISO 8601 with its zone (where days begin), e.g. "
        "'2026-11-24T10:00:00+01:00'; default the server's clock.",
    )
    include_superseded: bool = Field(
        default=False,
        description="Also return episodes a later one superseded (marked superseded_by); left out by "
        "default.",
    )
    metadata: MetadataFilter | None = Field(
        default=None, description='Exact match on top-level metadata keys (1 is not "1").'
    )
    mode: Literal["hybrid", "semantic", "lexical"] = Field(
        default="hybrid",
        description="'hybrid' (default): meaning and words together; 'semantic': meaning only; "
        "'lexical': words only (BM25).",
    )
    max_chars: int | None = Field(
        default=None,
        ge=100,
        le=MAX_CHARS,
        description="Reading budget: memory text returned per query, at most, best first (100-50,000; "
        "default 6,000, or for recall_batch 200,000 shared among its queries).",
    )
    min_score: float = Field(
        default=DEFAULT_MIN_SCORE,
        ge=0.0,
        le=1.0,
        description="Leave out episodes scoring below this (0-1); raise it for fewer, surer results.",
    )

    _now: datetime = PrivateAttr(default_factory=lambda: datetime.now(UTC))
    _since: str | None = PrivateAttr(default=None)
    _until: str | None = PrivateAttr(default=None)
    _expressions: tuple[str | None, str | None] = PrivateAttr(default=(None, None))

    @model_validator(mode="after")
    def _resolve_times(self) -> RecallOptions:
        if self.now is not None:
            moment = datetime.fromisoformat(self.now)
            self._now = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        else:
            self._now = datetime.now(tz.tzlocal())  # the local zone with its daylight-saving rules
        since = until = said_since = said_until = None
        if self.since is not None:
            since, said_since = resolve_edge(self.since, "since", self._now)
        if self.until is not None:
            until, said_until = resolve_edge(self.until, "until", self._now)
        if since is not None and until is not None and since > until:
            raise ValueError(
                f"since ({since}) is after until ({until}): no time lies between them. Swap them, or "
                "drop one."
            )
        self._since, self._until, self._expressions = since, until, (said_since, said_until)
        return self

    @property
    def moment(self) -> datetime:
        """The present of this request (aware): `now`, or the server's clock when it was checked."""
        return self._now

    @property
    def window(self) -> tuple[str | None, str | None]:
        """since and until as UTC timestamps, expressions resolved against `now`."""
        return self._since, self._until

    @property
    def expressions(self) -> tuple[str | None, str | None]:
        """The words since and until were given in (None where ISO 8601)."""
        return self._expressions

    @property
    def top(self) -> int:
        return self.k if self.k is not None else DEFAULT_K

    def budget(self, queries: int) -> int:
        """Characters of memory text each of `queries` queries may return."""
        if self.max_chars is not None:
            return self.max_chars
        return max(100, min(DEFAULT_MAX_CHARS, MAX_BATCH_CHARS // queries))


def check_query(value: str, info: ValidationInfo) -> str:
    """A question, or nothing (a listing of a window or session): checked as text when given."""
    if blank(value):
        return ""
    return check_text(value, info)


class RecallRequest(RecallOptions):
    query: Annotated[
        str,
        AfterValidator(check_query),
        Field(json_schema_extra={"maxLength": DEFAULT_MAX_TEXT_CHARS, _TEXT_LIMIT_MARK: True}),
    ] = Field(
        default="",
        description="A question or topic. May be empty when since, until or session is given: then recall "
        "lists what happened there, in time order.",
    )

    @model_validator(mode="after")
    def _something_to_find(self) -> RecallRequest:
        if not self.query and self.since is None and self.until is None and self.session is None:
            raise ValueError(
                "query is empty; send a question or topic, or give since, until or session to list what "
                "happened then."
            )
        return self


# recall_batch refuses calls that could return more items than this (queries x k x neighbours).
MAX_BATCH_ITEMS = 10_000


class RecallBatchRequest(RecallOptions):
    queries: Annotated[
        list[Annotated[str, Field(json_schema_extra={"minLength": 1, _TEXT_LIMIT_MARK: True})]],
        Field(min_length=1, max_length=MAX_BATCH_QUERIES, description="1 to 256 questions or topics."),
        AfterValidator(check_queries),
    ]

    @model_validator(mode="after")
    def _bounded_answer(self) -> RecallBatchRequest:
        most = len(self.queries) * self.top * (1 + 2 * self.contiguity)
        if most > MAX_BATCH_ITEMS:
            raise ValueError(
                f"recall_batch could return {most:,} items ({len(self.queries)} queries x k {self.top} x "
                f"{1 + 2 * self.contiguity} with neighbours); the limit is {MAX_BATCH_ITEMS:,}. Lower k or "
                "contiguity, or split the queries over several calls."
            )
        chars = len(self.queries) * self.budget(len(self.queries))
        if chars > MAX_BATCH_CHARS:
            raise ValueError(
                f"recall_batch could return {chars:,} characters ({len(self.queries)} queries x max_chars "
                f"{self.budget(len(self.queries)):,}); the limit is {MAX_BATCH_CHARS:,}. Lower max_chars, or "
                "leave it out, or split the "
                "queries over several calls."
            )
        return self


class ForgetRequest(Request):
    ids: Annotated[list[EventId], Field(min_length=1, max_length=MAX_FORGET_IDS)] | None = Field(
        default=None, description="The events to delete."
    )
    session: SessionId | None = Field(default=None, description="Delete every event of this session.")
    namespace: Namespace = "default"
    confirm: bool = Field(default=False, description="Must be true, or nothing is deleted.")

    @model_validator(mode="after")
    def _one_target_and_confirmed(self) -> ForgetRequest:
        if not self.confirm:
            raise ValueError("forget deletes memories for good; call it again with confirm=true.")
        if (self.ids is None) == (self.session is None):
            raise ValueError("pass either ids (a list of event ids) or session, not both and not neither.")
        return self


class SupersedeRequest(Request):
    ids: Annotated[list[EventId], Field(min_length=1, max_length=MAX_SUPERSEDES)] = Field(
        description="The episodes that are out of date."
    )
    by: EventId = Field(description="The episode that replaces them (stored already, same namespace).")
    namespace: Namespace = "default"

    @model_validator(mode="after")
    def _not_itself(self) -> SupersedeRequest:
        if self.by in self.ids:
            raise ValueError(f"an episode cannot supersede itself: {self.by} is in ids and is by.")
        return self


class PredictNextRequest(Request):
    session: SessionId | None = Field(
        default=None, description="Whose latest episodes form the context (default: the most recent session)."
    )
    after_event_id: EventId | None = Field(default=None, description="Predict what follows this episode.")
    k: K = Field(default=5, description="How many episodes (1-100).")
    namespace: Namespace = "default"
    max_chars: int = Field(
        default=DEFAULT_MAX_CHARS,
        ge=100,
        le=MAX_CHARS,
        description="Reading budget in characters (100-50,000).",
    )


class HealthRequest(Request):
    namespace: Namespace = "default"


R = TypeVar("R", bound=BaseModel)


def parse(model: type[R], arguments: dict[str, Any], max_text_chars: int = DEFAULT_MAX_TEXT_CHARS) -> R:
    """Check `arguments` against `model`; on failure raise InvalidInput with one sentence per problem."""
    try:
        return model.model_validate(arguments, context={"max_text_chars": max_text_chars})
    except ValidationError as exc:
        problems = list(dict.fromkeys(explain(error, model) for error in exc.errors()))
        raise InvalidInput(" ".join(problems[:3])) from None


_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "string_type": "a string",
    "bool_type": "true or false",
    "float_type": "a number",
    "dict_type": "a JSON object",
    "model_type": "a JSON object",
    "list_type": "a list of strings",
}


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if part == "[key]":
            out += " key"
        elif isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "arguments"


def _bounds(model: type[BaseModel], name: str) -> tuple[Any, Any]:
    field = model.model_fields.get(name)
    low = high = None
    for item in getattr(field, "metadata", []):
        low = getattr(item, "ge", low)
        high = getattr(item, "le", high)
    return low, high


def explain(error: ErrorDetails, model: type[BaseModel]) -> str:
    """One sentence for one validation error: what is wrong and what is allowed."""
    kind, loc, given = error["type"], tuple(error["loc"]), error.get("input")
    where = _where(loc)
    if kind == "value_error":
        return str((error.get("ctx") or {}).get("error", error["msg"]))
    if kind == "missing":
        return f"{where} is required."
    if kind == "extra_forbidden" and len(loc) == 1:
        fields = model.model_fields
        # Required ones first, then what is searched or stored, then the options.
        valid = sorted(fields, key=lambda name: (not fields[name].is_required(), name not in _SUBJECTS))
        return unknown_argument(str(loc[0]), valid)
    if kind in _EXPECTED:
        if loc and loc[-1] == "[key]":
            return f"{_where(loc[:-2])} keys must be strings."
        hint = ""
        if isinstance(given, str) and kind in ("dict_type", "model_type", "list_type"):
            hint = " Send the JSON value itself, not text that encodes it."
        return f"{where} must be {_EXPECTED[kind]}; got {_json_type(given)}.{hint}"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        low, high = _bounds(model, str(loc[0]))
        if low is not None and high is not None:
            return f"{where} must be between {low} and {high}; got {given}."
        return f"{where} {error['msg'].lower().removeprefix('input ')}; got {given}."
    if kind in ("too_short", "too_long"):
        ctx = error.get("ctx") or {}
        size = len(given) if isinstance(given, list | str | dict) else ctx.get("actual_length")
        low, high = ctx.get("min_length"), ctx.get("max_length")
        if where == "queries":
            return f"queries must hold 1 to {MAX_BATCH_QUERIES} strings; got {size}."
        if kind == "too_short":
            return f"{where} must hold at least {low} item(s); got {size}."
        return f"{where} may hold at most {high} items; got {size}."
    return f"{where}: {error['msg']}."


_SUBJECTS = ("query", "queries", "text")


def closest(name: str, valid: list[str]) -> str | None:
    """The valid name `name` most likely meant: one it contains as a word (top_k: k), else the most alike."""
    words = [w for w in re.split(r"[_\W]+", name.lower()) if w]
    for candidate in valid:
        if candidate in words or candidate == name.lower():
            return candidate
    alike = difflib.get_close_matches(name.lower(), valid, n=1, cutoff=0.6)
    return alike[0] if alike else None


def unknown_argument(name: str, valid: list[str]) -> str:
    guess = closest(name, valid)
    hint = f" Did you mean {guess!r}?" if guess else ""
    return f"unknown argument {name[:60]!r}.{hint} This tool takes: {', '.join(valid)}."


def tool_schema(model: type[BaseModel], max_text_chars: int) -> dict[str, Any]:
    """The JSON schema of a request as `tools/list` shows it, text limits set to EMX_MAX_TEXT_CHARS."""
    schema = model.model_json_schema()

    def fill(node: Any) -> None:
        if isinstance(node, dict):
            if node.pop(_TEXT_LIMIT_MARK, False):
                node["maxLength"] = max_text_chars
            for value in node.values():
                fill(value)
        elif isinstance(node, list):
            for value in node:
                fill(value)

    fill(schema)
    return schema


# -- results ----------------------------------------------------------------------------------


# remember describes at most this many episodes one by one; the rest by their ids alone.
REMEMBER_DETAILS = 5
PREVIEW_CHARS = 60
# ... and lists at most this many of the new episodes' ids (they hold consecutive positions).
REMEMBER_IDS = 100


class Duplicate(BaseModel):
    id: str = Field(description="The earlier episode this one nearly repeats.")
    similarity: float = Field(description="Cosine similarity of the two, 0.97 or more.")


class StoredEpisode(BaseModel):
    id: str = Field(description="Stable event id.")
    position: int = Field(description="0-based place of the episode in its session.")
    sentences: int = Field(description="Sentences in this episode.")
    chars: int = Field(description="Characters of text in this episode.")
    preview: str = Field(description=f"The episode's first {PREVIEW_CHARS} characters.")
    surprise: float | None = Field(
        description="How surprising the episode's first sentence was after the previous one (the boundary "
        "score, 0 to 2); null for the first episode of a call."
    )
    duplicate_of: Duplicate | None = Field(
        default=None, description="Set when an earlier episode says nearly the same; both are kept."
    )


RELATED_SHOWN = 3
RELATED_PREVIEW_CHARS = 100


class RelatedEpisode(BaseModel):
    id: str
    timestamp: str = Field(description="When it happened, ISO 8601 UTC, to the second.")
    preview: str = Field(description=f"Its first {RELATED_PREVIEW_CHARS} characters.")
    similarity: float = Field(description="Cosine similarity to the new text's closest episode.")


class RememberResult(BaseModel):
    session: str = Field(description="Session id; pass it to later `remember` calls of the same task.")
    timestamp: str = Field(description="When it happened, ISO 8601 UTC, to the second.")
    stored: int = Field(description="Episodes stored.")
    positions: list[int] = Field(description="First and last position of the new episodes in the session.")
    ids: list[str] = Field(
        description=f"The new episodes' ids in order, the first {REMEMBER_IDS} (all of them up to that many)."
    )
    episodes: list[StoredEpisode] = Field(
        description=f"The first {REMEMBER_DETAILS} episodes described one by one (the text is not echoed)."
    )
    supersedes: list[str] = Field(
        default_factory=list, description="The episodes this call superseded (recall now leaves them out)."
    )
    related: list[RelatedEpisode] = Field(
        default_factory=list,
        description=f"Up to {RELATED_SHOWN} earlier episodes on the same subject: if the new text replaces "
        "one, call `supersede` with its id (or pass it in `supersedes` next time).",
    )


class RecalledEvent(BaseModel):
    id: str
    text: str
    score: float = Field(
        description="How well it matches, 0 to 1: cosine similarity to the query, with BM25 word matching "
        "in 'hybrid' mode (see the README's Tools section)."
    )
    session: str
    position: int
    timestamp: str = Field(description="ISO 8601 UTC, to the second.")
    metadata: dict[str, Any]
    via: Literal["similarity", "contiguity", "prediction"] = Field(
        description=(
            "'similarity': matched the query; 'contiguity': next to a match in its session, shown on its own "
            "merit; 'prediction': close to the predicted next episode (predict_next)."
        )
    )
    neighbour_of: str | None = Field(
        default=None, description="For 'contiguity' results: the id of the matched episode it neighbours."
    )
    duplicates: int = Field(
        default=0,
        description="Other stored episodes with the same text (or the same but for case, spacing and "
        "punctuation, or nearly the same with no number or identifier differing), folded into this one.",
    )
    truncated: bool = Field(default=False, description="The text was cut to fit max_chars.")
    span: list[int] | None = Field(
        default=None,
        description="For a passage of a long episode: [start, end) of `text` within the episode's text.",
    )
    episode_chars: int | None = Field(
        default=None, description="For a passage: the length of the whole episode's text."
    )
    superseded_by: str | None = Field(
        default=None,
        description="The id of a later episode that replaces this one (with include_superseded).",
    )
    supersedes: list[str] = Field(
        default_factory=list, description="Ids of earlier episodes this one replaced."
    )


class ResolvedWindow(BaseModel):
    since: str | None = Field(description="Start, ISO 8601 UTC (null: open).")
    until: str | None = Field(description="End, ISO 8601 UTC (null: open).")
    said: str = Field(description="The words that named it, as read.")
    source: Literal["arguments", "query"] = Field(
        description="'arguments': since/until; 'query': a time expression in the question."
    )
    use: Literal["filter", "prior"] = Field(
        description="'filter': only episodes inside; 'prior': episodes inside rank higher."
    )


class RecallResult(BaseModel):
    results: list[RecalledEvent] = Field(
        description="Best first (or in time order, for a listing), within the reading budget."
    )
    omitted: int = Field(description="Matches left out because they did not fit max_chars.")
    order: Literal["relevance", "time"] = Field(
        default="relevance", description="'time' when recall listed a period or session (an empty query)."
    )
    window: ResolvedWindow | None = Field(default=None, description="The time window recall used, resolved.")
    note: str | None = Field(
        default=None,
        description="Why the answer is empty, or how it was read (a time expression, a question about what "
        "came before or after an event).",
    )


class RecallBatchResult(BaseModel):
    results: list[RecallResult] = Field(description="One result per query, in the order of the queries.")


class SupersedeResult(BaseModel):
    by: str = Field(description="The episode that replaces the others.")
    linked: list[str] = Field(description="Ids newly marked as superseded by it.")
    already: list[str] = Field(description="Ids that were marked so before this call.")


class PredictorInfo(BaseModel):
    trained_at: str
    context: int = Field(description="Episodes of context the model reads.")
    method: str = Field(description="What validation chose: lvm, blend, analog or copy_last.")
    blend_weight: float | None
    validation: dict[str, float] = Field(
        description="The chosen method's validation Hit@1/5/10 and MRR against the whole memory "
        "(all methods' figures: `emx-mcp train-lvm` and the checkpoint)."
    )
    baseline_hit_at_5: float | None = Field(
        description="Validation Hit@5 of the better baseline (copy_last or analog), for comparison."
    )


class PredictNextResult(BaseModel):
    method: Literal["lvm", "blend", "analog", "copy_last"] = Field(
        description="How the next episode was predicted: the trained model, its blend with copy-last, "
        "'analog' (what followed the most similar past episode) or 'copy_last' (episodes like the latest)."
    )
    predictions: list[RecalledEvent]
    omitted: int = Field(default=0, description="Predictions left out because they did not fit max_chars.")
    model: PredictorInfo | None = Field(
        description="The trained predictor's validation figures; null if none."
    )


# forget lists at most this many of the ids it deleted.
FORGET_LISTED = 100


class ForgetResult(BaseModel):
    removed: int = Field(description="How many events were deleted.")
    ids: list[str] = Field(description=f"The ids of the deleted events (the first {FORGET_LISTED}).")


class ListSizes(BaseModel):
    min: int
    mean: float
    max: int


class TrainingInfo(BaseModel):
    source: str = Field(description="Always 'stored vectors': IVF never trains on synthetic data.")
    size: int = Field(description="Vectors k-means was trained on (up to 256 per list).")
    seconds: float
    trained_at: str | None
    vectors_at_training: int
    trainings: int


class Capacity(BaseModel):
    events_in_store: int = Field(
        description="Events of every namespace together: EMX_MAX_EVENTS bounds the whole store "
        "(`events_in_log` counts this namespace alone)."
    )
    max_events: int = Field(description="EMX_MAX_EVENTS.")
    used: float = Field(description="events_in_store / max_events; health warns from 0.8.")


class DiskUse(BaseModel):
    event_log: int
    index_snapshot: int


class EncoderStatus(BaseModel):
    backend: str = Field(description="'onnx' (ONNX Runtime), 'torch', or 'torch (onnx unavailable: why)'.")
    ready: bool = Field(description="The model is loaded: a call does not wait for it.")
    batches: int = Field(description="Encoder calls shared by concurrent requests so far.")
    mean_batch: float = Field(description="Texts per shared encoder call.")


class HealthReport(BaseModel):
    namespace: str
    store: Literal["embedded", "milvus"] = Field(
        default="embedded", description="'embedded' (SQLite + FAISS in the data directory) or 'milvus'."
    )
    status: Literal["ok", "warning", "degraded"]
    reasons: list[str]
    kind: Literal["flat", "ivf"] = Field(
        description="'flat' is exact search; 'ivf' once the namespace is large."
    )
    index_type: str
    vectors: int
    buffered: int = Field(description="Vectors in the exact training buffer (all of them until IVF trains).")
    events_in_log: int = Field(description="Events of this namespace.")
    train_at: int
    nlist: int
    nprobe: int
    list_sizes: ListSizes | None
    imbalance: float = Field(description="FAISS imbalance factor of the inverted lists; 1 is perfectly even.")
    measured_recall_at_10: float | None = Field(
        description="Recall@10 against exact search, measured on stored vectors; 1.0 while flat."
    )
    recall_measured_at: str | None
    recall_probes: int
    target_recall: float
    tuned_for_recall: float | None = Field(
        description="Recall nprobe was tuned for: the target plus two standard errors of its measurement."
    )
    training: TrainingInfo | None
    last_training_error: str | None
    retraining: bool
    trainings_queued: int = Field(
        description="Trainings (of any namespace) waiting for their turn: one builds at a time per process."
    )
    batch_kernels: str = Field(
        description="Compiled list-by-list search for batches of 32+ queries on a trained IVF-Flat "
        "index: 'ready', 'loading', 'not loaded' (loads on the first such batch), 'off' "
        "(EMX_INDEX_BATCH_KERNELS=false or ivf_sq8) or 'unavailable: <why>' (FAISS answers, slower)."
    )
    bytes_in_memory: int
    bytes_on_disk: DiskUse
    capacity: Capacity
    integrity: str = Field(
        description="SQLite quick_check of the event log, run in the background at start: 'ok', "
        "'checking', or 'failed: <problems>'."
    )
    encoder: EncoderStatus | None = Field(
        default=None, description="The embedding model's backend and state."
    )


# -- browsing (resources, prompts, the memory browser) -----------------------------------------

SESSIONS_PAGE = 50
EPISODES_PAGE = 100
RECENT_EPISODES = 20


class NamespaceInfo(BaseModel):
    namespace: str
    events: int


class NamespaceList(BaseModel):
    namespaces: list[NamespaceInfo]


class SessionSummary(BaseModel):
    session: str
    episodes: int
    first: str = Field(description="Timestamp of its earliest episode.")
    last: str = Field(description="Timestamp of its latest episode.")


class SessionPage(BaseModel):
    namespace: str
    sessions: list[SessionSummary] = Field(description="Newest first (by when they last grew).")
    total: int
    next_cursor: str | None = Field(description="Pass it as `cursor` for the next page; null on the last.")


class BrowsedEpisode(BaseModel):
    id: str
    session: str
    position: int
    timestamp: str
    text: str
    metadata: dict[str, Any]
    surprise: float | None = Field(
        default=None,
        description="Boundary surprise of the episode's first sentence after the previous episode's last "
        "ones (0 to 2), recomputed from the text; null for a session's first episode.",
    )
    superseded_by: str | None = Field(default=None, description="The id of a later episode that replaces it.")
    supersedes: list[str] = Field(default_factory=list, description="Ids of earlier episodes it replaced.")


class EpisodeList(BaseModel):
    namespace: str
    session: str | None = None
    episodes: list[BrowsedEpisode]
    total: int | None = Field(default=None, description="Episodes in the session.")
    next_start: int | None = None


def namespace(value: object) -> str:
    """A namespace given outside a tool call (a command-line option), checked as the tools check it."""
    return parse(HealthRequest, {"namespace": value}).namespace
