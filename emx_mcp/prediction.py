"""Which memories come next: the trained predictor where it earned its place, else a baseline.

`copy_last` looks for episodes like the latest one; `analog` finds the stored episode most like
the latest one and predicts what followed it; `lvm` and `blend` use the namespace's trained
checkpoint (chosen on held-out sessions by `train-lvm`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emx_mcp.embedding import Vectors
from emx_mcp.errors import InvalidInput, NotFound
from emx_mcp.lvm.predictor import DEFAULT_CONTEXT, Checkpoint
from emx_mcp.retrieval import Hit, fit, nearest
from emx_mcp.schemas import PredictNextRequest
from emx_mcp.storage.index import Ids
from emx_mcp.storage.records import Filters
from emx_mcp.storage.store import Store


@dataclass(frozen=True, slots=True)
class Prediction:
    method: str  # "lvm", "blend", "analog" or "copy_last"
    hits: list[Hit]
    checkpoint: Checkpoint | None
    omitted: int = 0  # predictions left out of the reading budget


def context_of(store: Store, request: PredictNextRequest, limit: int) -> tuple[Ids, Vectors | None]:
    """(seqs, vectors) of the episodes the prediction starts from, oldest first."""
    namespace, session = request.namespace, request.session
    up_to = None
    if request.after_event_id is not None:
        anchor = store.event(namespace, request.after_event_id)
        if anchor is None:
            raise NotFound(f"no event with id {request.after_event_id[:80]!r} in namespace {namespace!r}.")
        if session is not None and session != anchor.session:
            raise InvalidInput(
                f"event {request.after_event_id} belongs to session {anchor.session!r}, not {session!r}."
            )
        session, up_to = anchor.session, anchor.position
    elif session is None:
        session = store.latest_session(namespace)
    if session is None:
        return np.zeros(0, np.int64), None
    seqs, vectors = store.context(namespace, session, up_to, limit)
    if len(seqs) == 0:
        if request.session is not None:
            raise NotFound(f"session {session!r} has no episodes in namespace {namespace!r}.")
        return seqs, None
    return seqs, vectors


def predict_next(store: Store, checkpoint: Checkpoint | None, request: PredictNextRequest) -> Prediction:
    """The stored episodes most likely needed next, never ones of the context."""
    store.catch_up()
    seqs, context = context_of(store, request, checkpoint.context if checkpoint else DEFAULT_CONTEXT)
    if context is None:
        return Prediction("copy_last", [], checkpoint)
    method = checkpoint.method if checkpoint else "copy_last"
    if method in ("lvm", "blend") and checkpoint is not None:
        target = checkpoint.predict(context)
    elif method == "analog":
        target = analog(store, request.namespace, seqs, context[-1])
    else:
        target = context[-1]
    hits = nearest(store, request.namespace, target, request.k, exclude=set(seqs.tolist()))
    fitted = fit(hits, request.max_chars)
    return Prediction(method, fitted.hits, checkpoint, fitted.omitted)


def analog(store: Store, namespace: str, context_seqs: Ids, current: Vectors) -> Vectors:
    """What followed the stored episode most like the current one (outside this context)."""
    excluded = set(context_seqs.tolist())
    (matches,) = store.search(namespace, current.reshape(1, -1), len(context_seqs) + 20, Filters())
    for match in matches:
        if match.event.seq in excluded:
            continue
        successor = store.next_vector(namespace, match.event)
        if successor is not None:
            return successor
    return current
