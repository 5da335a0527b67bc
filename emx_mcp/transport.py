"""The network transports: streamable HTTP (at /mcp) and SSE (at /sse), with auth and DNS-rebinding checks.

stdio needs none of this: the client that starts the process owns its pipes. Over the network the
SDK's pieces do the work: a `TokenVerifier` behind its bearer-auth middleware (every MCP request
needs `Authorization: Bearer <token>`, else 401) and its transport security settings (requests
whose Host or Origin header is not allowed get 421 / 403).
"""

from __future__ import annotations

import hmac
import ipaddress

from mcp.server import MCPServer
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette

from emx_mcp.config import Settings, is_loopback

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
WILDCARD_ADDRESSES = ("0.0.0.0", "::")


class BearerToken:
    """The SDK's TokenVerifier for one shared secret, compared in constant time."""

    def __init__(self, token: str) -> None:
        self._expected = token.encode("utf-8")

    async def verify_token(self, token: str) -> AccessToken | None:
        given = token.encode("utf-8", "surrogatepass")
        if not hmac.compare_digest(given, self._expected):
            return None
        # The SDK keeps the AccessToken for the request; it need not carry the secret itself.
        return AccessToken(token="", client_id="emx-mcp-client", scopes=[])


def base_url(settings: Settings) -> str:
    host = settings.host
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass
    return f"http://{host}:{settings.port}"


def auth_options(settings: Settings) -> tuple[BearerToken | None, AuthSettings | None]:
    """The token verifier and auth settings MCPServer takes; (None, None) without a token or over stdio."""
    if settings.auth_token is None or settings.transport == "stdio":
        return None, None
    # No OAuth server is involved: the SDK requires an issuer URL, but only publishes it when a
    # resource server URL is set, which it is not here.
    auth = AuthSettings(issuer_url=base_url(settings), resource_server_url=None)  # type: ignore[arg-type]
    return BearerToken(settings.auth_token.get_secret_value()), auth


def transport_security(settings: Settings) -> TransportSecuritySettings:
    """Which Host and Origin headers to accept: DNS-rebinding protection for the HTTP transports.

    A loopback bind accepts loopback names; a named or addressed bind accepts that name. A
    wildcard bind (0.0.0.0, ::) cannot know the names clients use: it checks only what
    EMX_ALLOWED_HOSTS lists, and with nothing listed it relies on the token alone.
    """
    hosts, origins = list(settings.allowed_hosts), list(settings.allowed_origins)
    if is_loopback(settings.host):
        names = list(LOOPBACK_NAMES)
    elif settings.host in WILDCARD_ADDRESSES:
        names = []
    else:
        names = [base_url(settings).removeprefix("http://").rsplit(":", 1)[0]]
    for name in names:
        hosts += [name, f"{name}:*"]
        origins += [f"http://{name}", f"http://{name}:*"]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=bool(hosts), allowed_hosts=hosts, allowed_origins=origins
    )


def network_app(server: MCPServer, settings: Settings) -> Starlette:
    """The ASGI app for EMX_TRANSPORT=http (streamable HTTP at /mcp) or sse (/sse and /messages/)."""
    security = transport_security(settings)
    if settings.transport == "http":
        return server.streamable_http_app(transport_security=security, host=settings.host)
    if settings.transport == "sse":
        return server.sse_app(transport_security=security, host=settings.host)
    raise ValueError(f"{settings.transport!r} is not a network transport")


def serve_network(server: MCPServer, settings: Settings) -> None:
    """Serve until interrupted (SIGINT / SIGTERM). Logs, access logs included, go to stderr."""
    import uvicorn

    config = uvicorn.Config(
        network_app(server, settings),
        host=settings.host,
        port=settings.port,
        log_config=None,  # keep the logging configured by the CLI: stderr, one format
        log_level=settings.log_level.lower(),
        lifespan="on",
    )
    uvicorn.Server(config).run()
