"""The transports: stdio, and streamable HTTP (at /mcp) and SSE (at /sse) with auth and DNS-rebinding checks.

stdio needs no security: the client that starts the process owns its pipes. It needs one repair:
the SDK drops a line it cannot parse without replying, so a request in it is never answered (see
AnswerUnparsable). Over the network the SDK's pieces do the work: a `TokenVerifier` behind its
bearer-auth middleware (every MCP request needs `Authorization: Bearer <token>`, else 401) and its
transport security settings (requests whose Host or Origin header is not allowed get 421 / 403).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import mcp_types as types
import structlog
from mcp.server import MCPServer
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.message import SessionMessage
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from emx_mcp.access import ADMIN, LOCAL, TOKEN_PATTERN, Grant, TokenBook
from emx_mcp.config import Settings, is_loopback

if TYPE_CHECKING:
    from emx_mcp.oauth import JwtVerifier

log = structlog.get_logger(__name__)

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
WILDCARD_ADDRESSES = ("0.0.0.0", "::")


class BearerToken:
    """The SDK's TokenVerifier: the admin token (EMX_AUTH_TOKEN), a scoped token, or a JWT access token.

    Secrets are compared in constant time; JWTs are checked by `JwtVerifier` (OAuth mode).
    """

    def __init__(
        self,
        token: str | None,
        book: Callable[[], TokenBook] | None = None,
        jwt_verifier: JwtVerifier | None = None,
    ) -> None:
        self._expected = None if token is None else token.encode("utf-8")
        self._book = book  # called when a scoped token is first checked: the store opens lazily
        self._jwt = jwt_verifier

    def grant_for(self, token: str) -> Grant | None:
        """What `token` may do, or None if it is not a valid token of this server."""
        given = token.encode("utf-8", "surrogatepass")
        if self._expected is not None and hmac.compare_digest(given, self._expected):
            return ADMIN
        if TOKEN_PATTERN.fullmatch(token):
            record = self._book().verify(token) if self._book is not None else None
            return None if record is None else record.grant()
        if self._jwt is not None and token.count(".") == 2:
            return self._jwt.grant_for(token)
        return None

    async def verify_token(self, token: str) -> AccessToken | None:
        grant = await anyio.to_thread.run_sync(self.grant_for, token)  # the book may be in Milvus
        if grant is None:
            return None
        # The SDK keeps the AccessToken for the request; it carries the grant, never the secret.
        return AccessToken(token="", client_id=grant.name, scopes=grant_scopes(grant))


def grant_scopes(grant: Grant) -> list[str]:
    scopes = ["emx:read"] + (["emx:write"] if grant.write else [])
    if grant.namespaces is None:
        return [*scopes, "emx:all-namespaces"]
    return scopes + [f"emx:namespace:{n}" for n in grant.namespaces]


def grant_of(token: AccessToken | None) -> Grant:
    """The grant of the request being served: LOCAL without auth (stdio, or HTTP on loopback)."""
    if token is None:
        return LOCAL
    namespaces = None
    if "emx:all-namespaces" not in token.scopes:
        prefix = "emx:namespace:"
        namespaces = tuple(s.removeprefix(prefix) for s in token.scopes if s.startswith(prefix))
    return Grant(token.client_id or "unnamed", namespaces, "emx:write" in token.scopes)


def caller() -> Grant:
    """The grant of the MCP request in hand."""
    return grant_of(get_access_token())


def base_url(settings: Settings) -> str:
    host = settings.host
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass
    return f"http://{host}:{settings.port}"


def auth_options(
    settings: Settings, book: Callable[[], TokenBook] | None = None
) -> tuple[BearerToken | None, AuthSettings | None]:
    """The token verifier and auth settings MCPServer takes; (None, None) without auth or over stdio."""
    if settings.transport == "stdio" or (settings.auth_token is None and not settings.oauth):
        return None, None
    admin = settings.auth_token.get_secret_value() if settings.auth_token is not None else None
    if settings.oauth:
        from emx_mcp.oauth import JwtVerifier

        # The SDK publishes /.well-known/oauth-protected-resource naming the issuer as this
        # resource's authorization server, and points every 401's WWW-Authenticate header at it.
        resource = settings.oauth_resource or base_url(settings) + "/mcp"
        auth = AuthSettings(issuer_url=settings.oauth_issuer, resource_server_url=resource)  # type: ignore[arg-type]
        return BearerToken(admin, book, JwtVerifier(settings)), auth
    # No OAuth server is involved: the SDK requires an issuer URL, but only publishes it when a
    # resource server URL is set, which it is not here.
    auth = AuthSettings(issuer_url=base_url(settings), resource_server_url=None)  # type: ignore[arg-type]
    return BearerToken(admin, book), auth


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


UNAUTHORIZED = (
    "the bearer token is missing or is not this server's EMX_AUTH_TOKEN. emx-mcp does not use OAuth: "
    "send the header 'Authorization: Bearer <EMX_AUTH_TOKEN>'"
)


class ExplainUnauthorized:
    """Every 401 says what to send: the SDK's says only "Authentication required".

    Clients treat any 401 as a cue for OAuth; one that reports the server's reason instead (the
    Inspector CLI with --stored-auth-only) now shows the user what is wrong.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/ui"):  # the browser explains its own
            await self.app(scope, receive, send)
            return
        replaced = False

        async def explain(message: Any) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start" and message["status"] == 401:
                replaced = True
                body = json.dumps({"error": "invalid_token", "error_description": UNAUTHORIZED}).encode()
                header = f'Bearer error="invalid_token", error_description="{UNAUTHORIZED}"'
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"www-authenticate", header.encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
            elif not replaced:
                await send(message)

        await self.app(scope, receive, explain)


def network_app(server: MCPServer, settings: Settings, pages: Sequence[BaseRoute] = ()) -> Starlette:
    """The ASGI app for EMX_TRANSPORT=http (streamable HTTP at /mcp) or sse (/sse and /messages/).

    `pages`: more routes beside the protocol's (the memory browser at /ui), guarding themselves.
    """
    security = transport_security(settings)
    if settings.transport == "http":
        app = server.streamable_http_app(transport_security=security, host=settings.host)
    elif settings.transport == "sse":
        app = server.sse_app(transport_security=security, host=settings.host)
    else:
        raise ValueError(f"{settings.transport!r} is not a network transport")
    app.router.routes.extend(pages)
    if settings.auth_token is not None and not settings.oauth:  # OAuth's 401s follow the spec as they are
        app.add_middleware(ExplainUnauthorized)
    return app


def serve_network(server: MCPServer, settings: Settings, pages: Sequence[BaseRoute] = ()) -> None:
    """Serve until interrupted (SIGINT / SIGTERM). Logs, access logs included, go to stderr."""
    import uvicorn

    config = uvicorn.Config(
        network_app(server, settings, pages),
        host=settings.host,
        port=settings.port,
        log_config=None,  # keep the logging configured by the CLI: stderr, one format
        log_level=settings.log_level.lower(),
        lifespan="on",
    )
    uvicorn.Server(config).run()


class AnswerUnparsable:
    """The stdio read stream, except that a line the SDK could not parse gets an error reply.

    The SDK hands such a line on as an exception, which its dispatcher drops: a client whose
    request was in it waits for ever. One way to get there is ordinary: a lone UTF-16 surrogate
    escape (JavaScript's JSON.stringify writes `\\ud800` for a string cut inside an emoji), which
    Python's json accepts and the SDK's parser refuses. Such a request is answered with an error
    for its id; a line that is not JSON at all with a parse error for id null (JSON-RPC 2.0).
    """

    def __init__(self, inner: Any, replies: Any) -> None:
        self._inner = inner  # ReadStream[SessionMessage | Exception]
        self._replies = replies  # WriteStream[SessionMessage]

    @property
    def last_context(self) -> Any:
        """The sender's context of the last message, which the SDK's dispatcher reads."""
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> SessionMessage | Exception:
        while True:
            item = await self._inner.receive()
            if not isinstance(item, Exception):
                return item  # type: ignore[no-any-return]
            await self._replies.send(SessionMessage(reply_to_unparsable(item)))

    def __aiter__(self) -> AnswerUnparsable:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> AnswerUnparsable:
        await self._inner.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        result: bool | None = await self._inner.__aexit__(exc_type, exc, tb)
        return result


def reply_to_unparsable(exc: Exception) -> types.JSONRPCError:
    """The error answering a line the SDK could not parse, for the request's id when it has one."""
    errors: list[dict[str, Any]] = getattr(exc, "errors", lambda: [])()
    raw = errors[0].get("input") if errors else None
    try:
        message = json.loads(raw) if isinstance(raw, str | bytes) else None
    except ValueError:
        message = None
    request_id = message.get("id") if isinstance(message, dict) and "method" in message else None
    if not isinstance(request_id, int | str) or isinstance(request_id, bool):
        log.warning("unparsable message", problem=str(exc)[:200])
        error = types.ErrorData(code=types.PARSE_ERROR, message=f"Parse error: {str(exc)[:200]}")
        return types.JSONRPCError(jsonrpc="2.0", id=None, error=error)
    log.warning("request with text that is not valid Unicode refused", id=request_id)
    error = types.ErrorData(
        code=types.INVALID_PARAMS,
        message="the request contains a lone UTF-16 surrogate (such as \\ud800, left when text is cut "
        "inside an emoji), which is not valid Unicode; nothing was done. Send well-formed text.",
    )
    return types.JSONRPCError(jsonrpc="2.0", id=request_id, error=error)


async def serve_stdio(server: MCPServer) -> None:
    """What `MCPServer.run("stdio")` does, with unparsable lines answered (see AnswerUnparsable)."""
    from mcp.server.stdio import stdio_server

    # The SDK offers no public way to hand its server other streams than its own.
    lowlevel = server._lowlevel_server
    async with stdio_server() as (read_stream, write_stream):
        await lowlevel.run(
            AnswerUnparsable(read_stream, write_stream),
            write_stream,
            lowlevel.create_initialization_options(),
        )
