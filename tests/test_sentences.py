from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emx_mcp.sentences import split, split_spans


def check_covers(text: str, spans: list[tuple[int, int]]) -> None:
    """Every non-whitespace character is in exactly one span; spans are trimmed and in order."""
    cursor = 0
    for start, end in spans:
        assert cursor <= start < end <= len(text)
        assert text[cursor:start].strip() == "", "non-whitespace text between sentences was dropped"
        assert not text[start].isspace() and not text[end - 1].isspace()
        cursor = end
    assert text[cursor:].strip() == ""


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400))
def test_no_text_is_lost_on_arbitrary_unicode(text: str) -> None:
    check_covers(text, split_spans(text))


PIECES = st.sampled_from(
    [
        "Dr.",
        "e.g.",
        "U.S.",
        "3.14",
        "v1.2.3",
        "`a.b()`",
        "```\ncode. More\n```",
        "\n\n",
        "\n- item",
        "\n1. one",
        "Hello.",
        "World!",
        "Why?",
        "...",
        '"Quoted."',
        "(paren.)",
        " ",
        "\t",
        "x" * 50,
        "é",
        "\u2022",
        "\ud7ff",
    ]
)


@settings(max_examples=500, deadline=None)
@given(st.lists(PIECES, max_size=40).map(" ".join), st.integers(min_value=5, max_value=200))
def test_no_text_is_lost_on_tricky_pieces(text: str, max_chars: int) -> None:
    spans = split_spans(text, max_chars=max_chars)
    check_covers(text, spans)
    for start, end in spans:
        if "```" not in text[start:end]:
            assert end - start <= max_chars


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Dr. Smith arrived. He sat down.", ["Dr. Smith arrived.", "He sat down."]),
        ("It cost 3.50 dollars. Cheap!", ["It cost 3.50 dollars.", "Cheap!"]),
        ("We met J. R. R. Tolkien. Nice.", ["We met J. R. R. Tolkien.", "Nice."]),
        ("Use e.g. Python. Or not.", ["Use e.g. Python.", "Or not."]),
        ("The U.S. Army marched. Then rested.", ["The U.S. Army marched.", "Then rested."]),
        ("Call `os.path.join(a, b). Then` it. Done.", ["Call `os.path.join(a, b). Then` it.", "Done."]),
        ("Version v2.0.1 shipped. Yes.", ["Version v2.0.1 shipped.", "Yes."]),
        ("Wait... What? Really?! OK.", ["Wait...", "What?", "Really?!", "OK."]),
        ('He said "Stop." Then left.', ['He said "Stop."', "Then left."]),
        ("Steps:\n- install it\n- run it\n1. check", ["Steps:", "- install it", "- run it", "1. check"]),
        ("One paragraph\n\nanother one", ["One paragraph", "another one"]),
        (
            "```py\nx = 1. Not a sentence end\n```\nAfter.",
            ["```py\nx = 1. Not a sentence end\n```", "After."],
        ),
        ("no punctuation at all", ["no punctuation at all"]),
        ("   ", []),
    ],
)
def test_examples(text: str, expected: list[str]) -> None:
    assert split(text) == expected


def test_long_sentence_is_cut_at_whitespace() -> None:
    text = " ".join(["word"] * 600)
    parts = split(text, max_chars=100)
    assert all(len(p) <= 100 for p in parts)
    assert " ".join(parts) == text
