"""The lexical index beside the event log: SQLite FTS5 with BM25, written in the same transactions.

Each event is indexed with two columns: its text, and its context, the text of the event before
it in its session. A short reply ("Yes, last Tuesday!") is found by the words of the question it
answers; the context counts half as much as the text itself (BM25 column weights 1 and 0.5,
chosen on the development conversations, see benchmarks/conversation_recall.py). Words are
stemmed (Porter) and diacritics folded, so "painted" finds "paint" and "café" finds "cafe".

Forgetting an event removes its row and, since the next event of its session carried its text as
context, rewrites that event's context: forgotten text is never searchable again.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Sequence

from emx_mcp.storage.records import Filters

TABLE = "events_fts"
CONTEXT_WEIGHT = 0.5
# Query words searched at most; the rest of a very long query adds little to BM25.
MAX_TERMS = 32
_WORD = re.compile(r"\w+", re.UNICODE)
# Words so common in questions that they match nearly every event: left out of lexical queries
# (BM25 would weigh them near zero anyway, but each would read a posting list of the whole store).
_STOPWORD_TEXT = """
a an and are as at be been but by can could did do does for from had has have he her hers him his how i
if in into is it its me my no not of on or our she so than that the their them then there these they
this to was we were what when where which who whom why will with would you your
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())

SCHEMA = f"""
CREATE VIRTUAL TABLE IF NOT EXISTS {TABLE} USING fts5(
    text, context, tokenize = 'porter unicode61 remove_diacritics 2'
)
"""


def terms(query: str) -> list[str]:
    """The distinct words of a query worth searching, in order, at most MAX_TERMS."""
    words = dict.fromkeys(w.lower() for w in _WORD.findall(query))
    return [w for w in words if w not in STOPWORDS][:MAX_TERMS]


def match_expression(words: Sequence[str]) -> str:
    """An FTS5 query matching any of the words, each quoted so that no word is read as syntax."""
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in words)


def add(conn: sqlite3.Connection, rows: Iterable[tuple[int, str, str, int, str]]) -> None:
    """Index new events: (seq, namespace, session, position, text), within the caller's transaction.

    Each one's context is the text of the event before it in its session, looked up in the log
    (which already holds the new rows), so events added together chain correctly.
    """
    for seq, namespace, session, position, text in rows:
        conn.execute(
            f"INSERT INTO {TABLE} (rowid, text, context) VALUES (?, ?, ?)",
            (seq, text, _previous_text(conn, namespace, session, position)),
        )


def remove(conn: sqlite3.Connection, gone: Sequence[tuple[int, str, str, int]]) -> None:
    """Unindex forgotten events (seq, namespace, session, position) after their rows were deleted.

    The event that followed each one in its session gets, as its new context, the text of the
    event now before it.
    """
    for seq, _, _, _ in gone:
        conn.execute(f"DELETE FROM {TABLE} WHERE rowid = ?", (seq,))
    for namespace, session, position in {(ns, s, p) for _, ns, s, p in gone}:
        following = conn.execute(
            "SELECT seq, position FROM events WHERE namespace = ? AND session = ? AND position > ? "
            "ORDER BY position LIMIT 1",
            (namespace, session, position),
        ).fetchone()
        if following is not None:
            context = _previous_text(conn, namespace, session, int(following[1]))
            conn.execute(f"UPDATE {TABLE} SET context = ? WHERE rowid = ?", (context, following[0]))


def rebuild(conn: sqlite3.Connection) -> None:
    """Index every event of the log (a store made before the lexical index existed)."""
    conn.execute(f"DELETE FROM {TABLE}")
    rows = conn.execute("SELECT seq, namespace, session, position, text FROM events ORDER BY seq").fetchall()
    add(conn, rows)


def _previous_text(conn: sqlite3.Connection, namespace: str, session: str, position: int) -> str:
    row = conn.execute(
        "SELECT text FROM events WHERE namespace = ? AND session = ? AND position < ? "
        "ORDER BY position DESC LIMIT 1",
        (namespace, session, position),
    ).fetchone()
    return "" if row is None else str(row[0])


def search(
    conn: sqlite3.Connection, namespace: str, query: str, filters: Filters, limit: int
) -> list[tuple[int, float]]:
    """(seq, BM25 score, higher is better) of the best `limit` events of `namespace` passing `filters`."""
    words = terms(query)
    if not words:
        return []
    where, params = filters.sql(namespace, table="e")
    rows = conn.execute(
        f"SELECT f.rowid, -bm25({TABLE}, 1.0, {CONTEXT_WEIGHT}) AS score FROM {TABLE} f "
        f"JOIN events e ON e.seq = f.rowid WHERE {TABLE} MATCH ? AND {where} ORDER BY score DESC LIMIT ?",
        [match_expression(words), *params, limit],
    ).fetchall()
    return [(int(seq), float(score)) for seq, score in rows]
