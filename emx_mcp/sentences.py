"""Split text into sentence spans without losing or altering a character.

`split_spans(text)` returns (start, end) offsets, in order and non-overlapping, such that every
non-whitespace character of `text` lies in exactly one span and each span starts and ends on a
non-whitespace character. Sentences are therefore exact slices of the input.

Rules, in order of precedence:
- a fenced code block (``` or ~~~ up to its closing fence) is one unit, never split inside;
- a blank line ends a sentence; so does a line break before a list item (-, *, +, bullet, "1.", "a)");
- inside a paragraph, a sentence ends after . ! ? (and any closing quotes or brackets) followed by
  whitespace and then a capital letter, digit, quote, bracket or list marker; except after a known
  abbreviation ("e.g.", "Dr.", "U.S."), a single initial ("J."), or inside inline `code`;
- a decimal point (3.14), a version (v1.2.3) or a dotted name (os.path.join) is never an end,
  since no whitespace follows it;
- a sentence longer than `max_chars` is cut at the last whitespace before the limit.
"""

from __future__ import annotations

import re

MAX_SENTENCE_CHARS = 1_000

_ABBREVIATION_WORDS = (
    "a.m p.m e.g i.e etc vs cf al approx ca dept est fig figs inc ltd co corp jr sr st mr mrs ms dr "
    "prof rev gen col capt lt sgt hon gov pres sen rep no nos vol vols pp ed eds jan feb mar apr jun "
    "jul aug sep sept oct nov dec mon tue wed thu fri sat sun u.s u.k u.n e.u ph.d b.a m.a b.sc m.sc"
)
_ABBREVIATIONS = frozenset(_ABBREVIATION_WORDS.split())

_FENCE = re.compile(r"^[ \t]*(```|~~~)[^\n]*\n.*?(?:^[ \t]*\1[^\n]*$|\Z)", re.M | re.S)
_BLANK_LINE = re.compile(r"\n[ \t]*\n\s*")
_LIST_ITEM = re.compile(r"\n(?=[ \t]*(?:[-*+\u2022\u25e6\u2023]|\d{1,3}[.)]|[a-zA-Z][)])[ \t]+\S)")
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_END = re.compile(r"[.!?\u2026]+[\"'\u2019\u201d)\]]*(?=\s+[\"'\u2018\u201c(\[A-Z0-9\u00c0-\u00de\-*\u2022])")
_WORD_BEFORE = re.compile(r"([A-Za-z][A-Za-z.]*)\.$")


def split_spans(text: str, max_chars: int = MAX_SENTENCE_CHARS) -> list[tuple[int, int]]:
    """Sentence (start, end) offsets covering every non-whitespace character of `text`."""
    spans: list[tuple[int, int]] = []
    for start, end, is_code in _blocks(text):
        if is_code:
            _emit(text, start, end, spans, max_chars=None)
            continue
        for p_start, p_end in _pieces(text, start, end, _BLANK_LINE):
            for l_start, l_end in _pieces(text, p_start, p_end, _LIST_ITEM):
                for s_start, s_end in _sentences(text, l_start, l_end):
                    _emit(text, s_start, s_end, spans, max_chars)
    return spans


def split(text: str, max_chars: int = MAX_SENTENCE_CHARS) -> list[str]:
    return [text[a:b] for a, b in split_spans(text, max_chars)]


def _blocks(text: str) -> list[tuple[int, int, bool]]:
    """Alternating prose and fenced-code regions: (start, end, is_code)."""
    out, cursor = [], 0
    for match in _FENCE.finditer(text):
        if match.start() > cursor:
            out.append((cursor, match.start(), False))
        out.append((match.start(), match.end(), True))
        cursor = match.end()
    if cursor < len(text):
        out.append((cursor, len(text), False))
    return out


def _pieces(text: str, start: int, end: int, separator: re.Pattern[str]) -> list[tuple[int, int]]:
    out, cursor = [], start
    for match in separator.finditer(text, start, end):
        out.append((cursor, match.start()))
        cursor = match.end() if match.end() > match.start() else match.start() + 1
    out.append((cursor, end))
    return out


def _sentences(text: str, start: int, end: int) -> list[tuple[int, int]]:
    code = [(m.start(), m.end()) for m in _INLINE_CODE.finditer(text, start, end)]
    out, cursor = [], start
    for match in _END.finditer(text, start, end):
        stop = match.end()
        if any(a < match.start() < b for a, b in code) or _is_abbreviation(text, start, match):
            continue
        out.append((cursor, stop))
        cursor = stop
    out.append((cursor, end))
    return out


def _is_abbreviation(text: str, start: int, match: re.Match[str]) -> bool:
    if match.group(0)[0] != "." or len(match.group(0).rstrip("\"')]\u2019\u201d")) > 1:
        return False  # "!", "?", "..." and "?!" always end a sentence
    before = _WORD_BEFORE.search(text, max(start, match.start() - 24), match.start() + 1)
    if before is None:
        return False
    word = before.group(1)
    if len(word) == 1 and word.isupper():
        return True  # an initial: "J. R. R. Tolkien"
    return word.lower().rstrip(".") in _ABBREVIATIONS


def _emit(text: str, start: int, end: int, spans: list[tuple[int, int]], max_chars: int | None) -> None:
    """Trim whitespace and append, cutting over-long sentences at whitespace."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    while max_chars is not None and end - start > max_chars:
        cut = start + max_chars
        space = max((text.rfind(ws, start + 1, cut) for ws in (" ", "\n", "\t")), default=-1)
        cut = space if space > start else cut
        piece_end = cut
        while piece_end > start and text[piece_end - 1].isspace():
            piece_end -= 1
        spans.append((start, piece_end))
        start = cut
        while start < end and text[start].isspace():
            start += 1
    if end > start:
        spans.append((start, end))
