"""Errors a caller can act on. The MCP layer turns each into a tool error with its message."""


class EmxError(Exception):
    """Base class: the message says what went wrong and what to do about it."""


class InvalidInput(EmxError, ValueError):
    """An argument is out of range or malformed; nothing was written."""


class NotFound(EmxError, LookupError):
    """A referenced event or session does not exist."""


class CapacityExceeded(EmxError):
    """The store is at EMX_MAX_EVENTS; nothing was written."""


class StoreMismatch(EmxError):
    """The data directory was built with another embedding model or a newer schema."""


class PlaceTaken(EmxError):
    """An imported event's id or place in its session is held by another event; nothing was written."""


class StorageError(EmxError):
    """The event log could not be written (disk full, read-only, I/O error); nothing was stored."""


def model_mismatch(source: str, stored: str, configured: str, remedy: str) -> StoreMismatch:
    """The one message for vectors of two embedding models meeting: they are not comparable."""
    return StoreMismatch(
        f"{source} holds embeddings from model {stored}, but this server uses {configured}. Vectors from "
        f"different models are not comparable: {remedy}."
    )
