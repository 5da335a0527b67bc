"""Token checks, DNS-rebinding settings and the start-up refusals of the network transports."""

from __future__ import annotations

import pytest

from emx_mcp import cli
from emx_mcp.config import Settings, is_loopback
from emx_mcp.transport import BearerToken, auth_options, base_url, transport_security

pytestmark = pytest.mark.anyio

TOKEN = "s3cret-token-with-enough-chars"


async def test_bearer_token_accepts_only_the_exact_token() -> None:
    verifier = BearerToken(TOKEN)
    accepted = await verifier.verify_token(TOKEN)
    assert accepted is not None and accepted.token == ""  # the secret is not kept
    for wrong in ("", TOKEN[:-1], TOKEN + "x", TOKEN.upper(), "\ud800", "é" * 30):
        assert await verifier.verify_token(wrong) is None, wrong


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("memory.example.com", False),
    ],
)
def test_loopback_detection(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_non_loopback_bind_without_token_is_refused() -> None:
    with pytest.raises(ValueError, match=r"EMX_HOST is 0\.0\.0\.0, which is not loopback, so EMX_AUTH_TOKEN"):
        Settings(transport="http", host="0.0.0.0")
    with pytest.raises(ValueError, match="at least 16"):
        Settings(transport="sse", host="0.0.0.0", auth_token="short")
    assert Settings(transport="http", host="0.0.0.0", auth_token=TOKEN).host == "0.0.0.0"
    # stdio never binds: the host setting does not matter there.
    assert Settings(transport="stdio", host="0.0.0.0").transport == "stdio"


def test_cli_refuses_to_start_on_a_public_address_without_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("EMX_AUTH_TOKEN", raising=False)
    assert cli.main(["serve", "--transport", "http", "--host", "0.0.0.0"]) == 2
    assert "EMX_AUTH_TOKEN must be set" in capsys.readouterr().err


def test_token_is_never_shown_by_the_settings() -> None:
    settings = Settings(transport="http", auth_token=TOKEN)
    assert TOKEN not in repr(settings) and TOKEN not in str(settings.model_dump())


def test_auth_is_configured_only_for_network_transports_with_a_token() -> None:
    assert auth_options(Settings()) == (None, None)
    assert auth_options(Settings(transport="http")) == (None, None)
    assert auth_options(Settings(transport="stdio", auth_token=TOKEN)) == (None, None)
    verifier, auth = auth_options(Settings(transport="http", port=9000, auth_token=TOKEN))
    assert verifier is not None and auth is not None and auth.resource_server_url is None


def test_dns_rebinding_protection_on_loopback() -> None:
    security = transport_security(Settings(transport="http"))
    assert security.enable_dns_rebinding_protection
    assert {"127.0.0.1:*", "localhost:*", "[::1]:*"} <= set(security.allowed_hosts)
    assert "http://localhost:*" in security.allowed_origins
    assert not any("example" in h for h in security.allowed_hosts)


def test_dns_rebinding_protection_on_a_named_host_and_extra_names() -> None:
    settings = Settings(
        transport="http",
        host="10.0.0.7",
        auth_token=TOKEN,
        allowed_hosts="memory.example.com:*, proxy.local",  # type: ignore[arg-type]
        allowed_origins="https://app.example.com",  # type: ignore[arg-type]
    )
    security = transport_security(settings)
    assert security.enable_dns_rebinding_protection
    assert {"10.0.0.7:*", "memory.example.com:*", "proxy.local"} <= set(security.allowed_hosts)
    assert "localhost:*" not in security.allowed_hosts
    assert "https://app.example.com" in security.allowed_origins


def test_wildcard_bind_checks_only_listed_hosts() -> None:
    bare = transport_security(Settings(transport="http", host="0.0.0.0", auth_token=TOKEN))
    assert not bare.enable_dns_rebinding_protection  # the token is the guard; no names are known
    listed = transport_security(
        Settings(transport="http", host="0.0.0.0", auth_token=TOKEN, allowed_hosts=["mem.example:*"])
    )
    assert listed.enable_dns_rebinding_protection and listed.allowed_hosts == ["mem.example:*"]


def test_base_url_brackets_ipv6() -> None:
    assert base_url(Settings(transport="http", host="::1", port=9001)) == "http://[::1]:9001"
    assert base_url(Settings(transport="http", port=9001)) == "http://127.0.0.1:9001"
