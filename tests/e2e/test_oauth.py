"""OAuth resource-server mode against the real server: JWTs made and signed here, a JWKS file, no network."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import anyio
import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.e2e.servers import network_server

pytestmark = pytest.mark.slow

ISSUER = "https://id.example.com/"
AUDIENCE = "https://memory.example.com/mcp"


def keypair() -> Any:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwks(key: Any, kid: str) -> dict[str, Any]:
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return {"keys": [{**public, "kid": kid, "alg": "RS256", "use": "sig"}]}


def token(key: Any, kid: str = "k1", **claims: Any) -> str:
    body = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "exp": int(time.time()) + 600,
        "emx_namespaces": ["team-a"],
        "scope": "emx:write",
        **claims,
    }
    return jwt.encode(
        {k: v for k, v in body.items() if v is not None}, key, algorithm="RS256", headers={"kid": kid}
    )


def test_jwt_access_tokens_per_the_mcp_authorization_spec(tmp_path: Path) -> None:
    key, other = keypair(), keypair()
    keys = tmp_path / "jwks.json"
    keys.write_text(json.dumps(jwks(key, "k1")))
    env = {"EMX_OAUTH_ISSUER": ISSUER, "EMX_OAUTH_AUDIENCE": AUDIENCE, "EMX_OAUTH_JWKS": str(keys)}
    with network_server(tmp_path / "data", **env) as server:
        base = server.url.removesuffix("/mcp")
        request = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
        accept = {"Accept": "application/json, text/event-stream"}
        with httpx2.Client(timeout=60) as http:
            metadata = http.get(base + "/.well-known/oauth-protected-resource/mcp")  # RFC 9728, path-suffixed
            assert metadata.status_code == 200, metadata.text
            assert metadata.json()["authorization_servers"] == [ISSUER]

            bad = {
                "no token": None,
                "wrong audience": token(key, aud="https://other.example.com/mcp"),
                "wrong issuer": token(key, iss="https://evil.example.com/"),
                "bad signature": token(other),
                "expired": token(key, exp=int(time.time()) - 60),
                "no namespace claim": token(key, emx_namespaces=None),
                "not a JWT": "not-a-token",
            }
            for problem, value in bad.items():
                headers = {**accept, **({"Authorization": f"Bearer {value}"} if value else {})}
                answer = http.post(server.url, json=request, headers=headers)
                assert answer.status_code == 401, problem
                challenge = answer.headers.get("www-authenticate", "")
                assert challenge.startswith("Bearer") and "resource_metadata=" in challenge, (
                    problem,
                    challenge,
                )

        async def use(value: str) -> tuple[dict[str, Any], str]:
            http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {value}"}, timeout=120)
            async with Client(streamable_http_client(server.url, http_client=http)) as client:
                stored = await client.call_tool("remember", {"text": "Alice's team deploys on Tuesdays."})
                other = await client.call_tool("recall", {"query": "deploys", "namespace": "team-b"})
            await http.aclose()
            assert other.is_error
            return stored.structured_content or {}, " ".join(getattr(c, "text", "") for c in other.content)

        stored, refusal = anyio.run(use, token(key))
        assert stored["stored"] == 1 and "not open to token 'oauth:alice'; it may use: team-a" in refusal

        async def read_only(value: str) -> str:
            http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {value}"}, timeout=120)
            async with Client(streamable_http_client(server.url, http_client=http)) as client:
                found = await client.call_tool("recall", {"query": "When does the team deploy?"})
                assert not found.is_error and found.structured_content["results"]  # type: ignore[index]
                written = await client.call_tool("remember", {"text": "no"})
            await http.aclose()
            return " ".join(getattr(c, "text", "") for c in written.content)

        assert "read-only" in anyio.run(read_only, token(key, scope="openid"))
    assert "token=oauth:alice" in server.stderr and "namespace=team-a" in server.stderr
