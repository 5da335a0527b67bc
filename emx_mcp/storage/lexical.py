"""The lexical index beside the event log: SQLite FTS5 with BM25, written in the same transactions.

Each event is indexed with two columns: its text, and its context, the text of the event before
it in its session. A short reply ("Yes, last Tuesday!") is found by the words of the question it
answers; the context counts half as much as the text itself (BM25 column weights 1 and 0.5,
chosen on the development conversations, see benchmarks/conversation_recall.py). Words are
stemmed (Porter) and diacritics folded, so "painted" finds "paint" and "café" finds "cafe".

A match's score says how much of the query's information it holds. Mostly (COVERAGE_SHARE) its
coverage: its BM25 over the BM25 the same row would have if it held every query word exactly once,
at most 1; that is the share of the query's IDF mass its text matches (BM25 allowing for repeated
words), or CONTEXT_SHARE of what its context matches if that is more (a short reply is found by
the question it answers). The rest is its BM25 relative to the query's best match, weighed by how
much of the query that best match covers (in full from TRUST up): so lexical ranks among good
matches count, while one common word, which covers little, earns little. Chosen on three
development sets together (benchmarks/tune_recall.py).

Forgetting an event removes its row and, since the next event of its session carried its text as
context, rewrites that event's context: forgotten text is never searchable again.
"""

from __future__ import annotations

import math
import re
import sqlite3
import threading
from collections.abc import Iterable, Sequence

from emx_mcp.storage.records import Filters

TABLE = "events_fts"
# BM25 column weights: the context counts half as much as the text.
CONTEXT_WEIGHT = 0.5
# A match's coverage by its context (the episode before it) counts this share of it.
CONTEXT_SHARE = 0.5
# The score: this share is the match's coverage; the rest its BM25 relative to the query's best
# match, trusted in full only when that best match covers at least TRUST of the query.
COVERAGE_SHARE = 0.6
TRUST = 0.3
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

TOKENIZE = "porter unicode61 remove_diacritics 2"
SCHEMA = f"""
CREATE VIRTUAL TABLE IF NOT EXISTS {TABLE} USING fts5(text, context, tokenize = '{TOKENIZE}')
"""
# Per term, how many rows hold it: the document frequencies BM25's IDF uses.
VOCABULARY = f"CREATE VIRTUAL TABLE IF NOT EXISTS {TABLE}_terms USING fts5vocab({TABLE}, 'row')"


def terms(query: str) -> list[str]:
    """The distinct words of a query worth searching, in order, at most MAX_TERMS."""
    words = dict.fromkeys(w.lower() for w in _WORD.findall(query))
    return [w for w in words if w not in STOPWORDS][:MAX_TERMS]


class _Scratch(threading.local):
    """An in-memory FTS5 table per thread: tokenizes text exactly as the index does."""

    def __init__(self) -> None:
        self.conn = sqlite3.connect(":memory:", check_same_thread=False)
        self.conn.execute(f"CREATE VIRTUAL TABLE t USING fts5(text, context, tokenize = '{TOKENIZE}')")
        self.conn.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'instance')")

    def tokens(
        self, rows: Sequence[tuple[str, str]], only: Sequence[str] | None = None
    ) -> list[tuple[set[str], set[str]]]:
        """For each (text, context): the index's terms (stems) in each column; of `only`, if given."""
        self.conn.executemany(
            "INSERT INTO t (rowid, text, context) VALUES (?, ?, ?)",
            [(i, text, context) for i, (text, context) in enumerate(rows, 1)],
        )
        out: list[tuple[set[str], set[str]]] = [(set(), set()) for _ in rows]
        if only is None:
            found = self.conn.execute("SELECT term, doc, col FROM v").fetchall()
        else:  # a lookup per term, rather than every word of every row
            found = [
                row
                for term in dict.fromkeys(only)
                for row in self.conn.execute("SELECT term, doc, col FROM v WHERE term = ?", (term,))
            ]
        for term, doc, column in found:
            out[int(doc) - 1][0 if column == "text" else 1].add(str(term))
        self.conn.execute("DELETE FROM t")
        return out


_SCRATCH = _Scratch()


def stemmed(words: Sequence[str]) -> list[tuple[str, str]]:
    """(word, its index term) for each word that has one, the first word of each term only."""
    out: dict[str, str] = {}
    for word, (found, _) in zip(words, tokens([(w, "") for w in words]), strict=True):
        for term in sorted(found):
            out.setdefault(term, word)
    return [(word, term) for term, word in out.items()]


def tokens(
    rows: Sequence[tuple[str, str]], only: Sequence[str] | None = None
) -> list[tuple[set[str], set[str]]]:
    """The index's terms in each (text, context), as FTS5 tokenizes them (only those in `only`, if given)."""
    return _SCRATCH.tokens(rows, only) if rows else []


def idf(documents: int, holding: int) -> float:
    """FTS5's BM25 IDF of a term that `holding` of `documents` rows hold (never below 1e-6)."""
    return max(1e-6, math.log((documents - holding + 0.5) / (holding + 0.5)))


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
    """(seq, lexical score 0-1) of the best `limit` events (by BM25) of `namespace` passing `filters`."""
    pairs = stemmed(terms(query))
    if not pairs:
        return []
    ideal = _ideal_score(conn, [term for _, term in pairs])
    where, params = filters.sql(namespace, table="e")
    rows = conn.execute(
        f"SELECT f.rowid, -bm25({TABLE}, 1.0, {CONTEXT_WEIGHT}) AS score, -bm25({TABLE}, 1.0, 0.0), "
        f"-bm25({TABLE}, 0.0, 1.0) FROM {TABLE} f JOIN events e ON e.seq = f.rowid "
        f"WHERE {TABLE} MATCH ? AND {where} ORDER BY score DESC LIMIT ?",
        [match_expression([word for word, _ in pairs]), *params, limit],
    ).fetchall()
    if not rows:
        return []
    once = _saturation(conn, [int(row[0]) for row in rows])
    covered = [
        min(1.0, max(float(own), CONTEXT_SHARE * float(context)) / (ideal * once.get(int(seq), 1.0)))
        for seq, _, own, context in rows
    ]
    relative = [float(row[1]) / float(rows[0][1]) for row in rows]
    return [(int(row[0]), c) for row, c in zip(rows, blend(covered, relative), strict=True)]


def blend(covered: Sequence[float], relative: Sequence[float]) -> list[float]:
    """The lexical score of each match from its coverage and its BM25 relative to the best (both 0-1)."""
    trust = min(1.0, max(covered, default=0.0) / TRUST)
    return [
        COVERAGE_SHARE * c + (1 - COVERAGE_SHARE) * trust * r for c, r in zip(covered, relative, strict=True)
    ]


def _ideal_score(conn: sqlite3.Connection, stems: Sequence[str]) -> float:
    """The sum of the terms' IDFs (FTS5's BM25 IDF over every row of the index)."""
    documents, _ = _averages(conn)
    held = dict(
        conn.execute(
            f"SELECT term, doc FROM {TABLE}_terms WHERE term IN ({','.join('?' * len(stems))})", list(stems)
        ).fetchall()
    )
    return sum(idf(documents, int(held.get(term, 0))) for term in stems) or 1.0


# FTS5's BM25 constants.
K1 = 1.2
B = 0.75


def _averages(conn: sqlite3.Connection) -> tuple[int, float]:
    """(rows, mean tokens per row) of the index, from FTS5's averages record."""
    row = conn.execute(f"SELECT block FROM {TABLE}_data WHERE id = 1").fetchone()
    numbers = varints(row[0]) if row is not None and row[0] else []
    if not numbers or numbers[0] == 0:
        return 0, 1.0
    return numbers[0], max(1.0, sum(numbers[1:]) / numbers[0])


def _saturation(conn: sqlite3.Connection, seqs: Sequence[int]) -> dict[int, float]:
    """Per row, BM25's weight of one occurrence of a word: (k1 + 1) / (1 + k1 (1 - b + b len/avg))."""
    _, mean = _averages(conn)
    out: dict[int, float] = {}
    for start in range(0, len(seqs), 500):
        chunk = list(seqs[start : start + 500])
        rows = conn.execute(
            f"SELECT id, sz FROM {TABLE}_docsize WHERE id IN ({','.join('?' * len(chunk))})", chunk
        ).fetchall()
        for seq, size in rows:
            length = sum(varints(size))
            out[int(seq)] = (K1 + 1) / (1 + K1 * (1 - B + B * length / mean))
    return out


def varints(blob: bytes) -> list[int]:
    """SQLite's big-endian variable-length integers, as FTS5 stores its sizes and totals."""
    out = []
    i = 0
    while i < len(blob):
        value = 0
        for n in range(9):
            byte = blob[i]
            i += 1
            if n == 8:
                value = (value << 8) | byte
                break
            value = (value << 7) | (byte & 0x7F)
            if not byte & 0x80:
                break
        out.append(value)
    return out
