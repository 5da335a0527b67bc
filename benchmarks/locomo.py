"""LoCoMo conversations (Maharana et al., ACL 2024) as the conversation benchmark reads them.

Each conversation is a list of dated sessions of turns; a turn is stored as the line
`Speaker: text`, with `[shares a photo: caption]` added when the turn shared a photo (the caption
is what the agent saw of it). Questions of categories 1 to 4 count; category 5 (adversarial) has
no evidence meant to be found. Evidence is given as turn ids (`D<session>:<turn>`).

The data is read from a folder given on the command line and never copied into this repository.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

CATEGORIES = (1, 2, 3, 4)


@dataclass(frozen=True, slots=True)
class Turn:
    id: str  # D<session>:<n>
    session: int
    line: str  # "Speaker: text [shares a photo: ...]"


@dataclass(slots=True)
class Session:
    number: int
    timestamp: str  # ISO 8601, UTC
    turns: list[Turn]
    # Character span of each turn's line in `text`.
    spans: list[tuple[int, int]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(t.line for t in self.turns)

    def __post_init__(self) -> None:
        at = 0
        for turn in self.turns:
            self.spans.append((at, at + len(turn.line)))
            at += len(turn.line) + 1


@dataclass(frozen=True, slots=True)
class Question:
    text: str
    category: int
    evidence: frozenset[str]  # turn ids


@dataclass(slots=True)
class Conversation:
    name: str
    sessions: list[Session]
    questions: list[Question]

    @property
    def turns(self) -> dict[str, Turn]:
        return {t.id: t for s in self.sessions for t in s.turns}


def _when(text: str) -> str:
    """'1:56 pm on 8 May, 2023' as ISO 8601 (UTC; the data gives no zone)."""
    moment = datetime.strptime(text.strip(), "%I:%M %p on %d %B, %Y").replace(tzinfo=UTC)
    return moment.isoformat().replace("+00:00", "Z")


def _line(turn: dict[str, object]) -> str:
    line = f"{turn['speaker']}: {turn['text']}"
    if turn.get("blip_caption"):
        line += f" [shares a photo: {turn['blip_caption']}]"
    return line


def load(folder: Path) -> list[Conversation]:
    conversations = []
    for path in sorted(folder.glob("*.json")):
        raw = json.loads(path.read_text())
        sessions = []
        for key, value in raw.items():
            match = re.fullmatch(r"session_(\d+)", key)
            if match and isinstance(value, list) and value:
                number = int(match.group(1))
                turns = [Turn(str(t["dia_id"]), number, _line(t)) for t in value]
                sessions.append(Session(number, _when(raw[f"session_{number}_date_time"]), turns))
        sessions.sort(key=lambda s: s.number)
        known = {t.id for s in sessions for t in s.turns}
        questions = []
        for q in raw["qa"]:
            evidence = frozenset(
                e.strip()
                for item in q.get("evidence", [])
                for e in str(item).split(";")
                if e.strip() in known
            )
            if q["category"] in CATEGORIES and evidence:
                questions.append(Question(str(q["question"]), int(q["category"]), evidence))
        conversations.append(Conversation(path.stem, sessions, questions))
    return conversations


# -- metrics (LongMemEval's definitions, over ranked items that each cover some turns) ----------


def any_at(ranked: list[frozenset[str]], evidence: frozenset[str], k: int) -> float:
    """1 if the first k items cover at least one evidence turn."""
    return float(bool(evidence & frozenset().union(*ranked[:k])))


def all_at(ranked: list[frozenset[str]], evidence: frozenset[str], k: int) -> float:
    """1 if the first k items cover every evidence turn."""
    return float(evidence <= frozenset().union(*ranked[:k]))


def ndcg_at(ranked: list[frozenset[str]], evidence: frozenset[str], k: int) -> float:
    """Binary relevance: an item is relevant when it covers an evidence turn."""
    dcg = sum(1 / math.log2(i + 2) for i, item in enumerate(ranked[:k]) if item & evidence)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(k, len(evidence))))
    return dcg / ideal if ideal else 0.0


def session_of(turn_id: str) -> int:
    return int(turn_id[1:].split(":")[0])
