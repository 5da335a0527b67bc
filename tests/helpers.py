"""Small shared test parts."""

from __future__ import annotations

from emx_mcp.embedding import DEFAULT_MODEL_ID, HashingEncoder


class DefaultIdEncoder(HashingEncoder):
    """Hashing vectors stored under the packaged model's id (384-d).

    A store filled with it opens in the CLI without loading the real model, because the CLI's
    encoder has that id and the store already knows its dimension; nothing is embedded there.
    """

    def __init__(self) -> None:
        super().__init__(dim=384)

    @property
    def model_id(self) -> str:
        return DEFAULT_MODEL_ID
