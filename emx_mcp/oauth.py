"""OAuth resource-server mode: JWT access tokens of an organisation's identity provider.

Per the MCP authorization spec the server is a resource server: it publishes its metadata at
/.well-known/oauth-protected-resource (the SDK does, from the auth settings), answers a request
without a valid token with 401 and a `WWW-Authenticate` header pointing at that metadata, and
checks each access token itself: signature against the issuer's JWKS (a file, or an https URL
fetched and cached by PyJWT), issuer, audience and expiry. The namespaces a token opens come from
a configurable claim; the right to write from a scope.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jwt
import structlog

from emx_mcp.access import Grant
from emx_mcp.config import Settings
from emx_mcp.schemas import check_namespace

log = structlog.get_logger(__name__)

ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]


class JwtVerifier:
    """Checks JWT access tokens against the configured issuer, audience and keys."""

    def __init__(self, settings: Settings) -> None:
        assert settings.oauth_issuer and settings.oauth_audience and settings.oauth_jwks
        self.issuer = settings.oauth_issuer
        self.audience = settings.oauth_audience
        self.claim = settings.oauth_namespaces_claim
        self.write_scope = settings.oauth_write_scope
        source = settings.oauth_jwks
        self._client = jwt.PyJWKClient(source) if source.startswith(("https://", "http://")) else None
        self._keys = (
            None if self._client is not None else jwt.PyJWKSet.from_dict(json.loads(Path(source).read_text()))
        )

    def _key(self, token: str) -> Any:
        if self._client is not None:
            return self._client.get_signing_key_from_jwt(token).key
        kid = jwt.get_unverified_header(token).get("kid")
        assert self._keys is not None
        for key in self._keys.keys:
            if kid is None or key.key_id == kid:
                return key.key
        raise jwt.InvalidTokenError(f"no key with kid {kid!r} in the JWKS")

    def grant_for(self, token: str) -> Grant | None:
        """The grant of a valid access token, or None (bad signature, issuer, audience, expired, no claim)."""
        try:
            claims = jwt.decode(
                token,
                self._key(token),
                algorithms=ALGORITHMS,
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iss", "aud"]},
            )
        except (jwt.PyJWTError, ValueError) as exc:
            log.info("access token refused", problem=type(exc).__name__)
            return None
        raw = claims.get(self.claim)
        names = raw.split() if isinstance(raw, str) else raw
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            log.info("access token refused", problem=f"no {self.claim} claim")
            return None
        try:
            namespaces = tuple(check_namespace(n) for n in names)
        except ValueError:
            return None
        scopes = str(claims.get("scope", "")).split()
        subject = str(claims.get("sub", "unknown"))[:64]
        return Grant(f"oauth:{subject}", namespaces, self.write_scope in scopes)
