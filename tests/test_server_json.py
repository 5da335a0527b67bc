"""server.json (the MCP registry manifest) and the README agree with the code.

The registry's rules checked here come from its server.schema.json (2025-12-11): the name
pattern, the 100-character description, the fields a package and an input may have.
"""

from __future__ import annotations

import json
import re
import tomllib
import typing
from pathlib import Path

from pydantic_core import PydanticUndefined

from emx_mcp import __version__
from emx_mcp.config import Settings

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = json.loads((ROOT / "server.json").read_text())
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
README = (ROOT / "README.md").read_text()

PACKAGE_FIELDS = {
    "registryType",
    "registryBaseUrl",
    "identifier",
    "version",
    "fileSha256",
    "runtimeHint",
    "transport",
    "runtimeArguments",
    "packageArguments",
    "environmentVariables",
}
INPUT_FIELDS = {
    "name",
    "description",
    "isRequired",
    "format",
    "value",
    "isSecret",
    "default",
    "placeholder",
    "choices",
    "variables",
}


def env_name(field: str) -> str:
    return f"EMX_{field.upper()}"


def test_versions_agree() -> None:
    (package,) = MANIFEST["packages"]
    assert MANIFEST["version"] == package["version"] == PYPROJECT["version"] == __version__
    assert package["identifier"] == PYPROJECT["name"]


def test_manifest_follows_the_registry_schema() -> None:
    assert (
        MANIFEST["$schema"] == "https://static.modelcontextprotocol.io/schemas/2025-12-11/server.schema.json"
    )
    assert re.fullmatch(r"[a-zA-Z0-9.-]+/[a-zA-Z0-9._-]+", MANIFEST["name"])
    assert 1 <= len(MANIFEST["description"]) <= 100
    (package,) = MANIFEST["packages"]
    assert set(package) <= PACKAGE_FIELDS
    assert package["registryType"] == "pypi" and package["transport"] == {"type": "stdio"}
    assert not re.search(r"[\^~<>=*x]", package["version"]) and package["version"] != "latest"
    for variable in package["environmentVariables"]:
        assert set(variable) <= INPUT_FIELDS and variable["description"]
        assert variable.get("format", "string") in {"string", "number", "boolean", "filepath"}
    # PyPI ownership: the registry looks for this marker in the package's README.
    assert f"mcp-name: {MANIFEST['name']}" in README


def test_every_setting_is_in_the_manifest_with_its_default_and_secrecy() -> None:
    (package,) = MANIFEST["packages"]
    listed = {v["name"]: v for v in package["environmentVariables"]}
    assert set(listed) == {env_name(f) for f in Settings.model_fields}
    for field, info in Settings.model_fields.items():
        variable = listed[env_name(field)]
        assert variable["isSecret"] is (field in ("auth_token", "milvus_token")), field
        if isinstance(info.default, bool):
            assert variable["format"] == "boolean" and variable["default"] == str(info.default).lower()
        elif info.default is not PydanticUndefined and info.default is not None:
            assert variable["default"] == str(info.default), field
        if typing.get_origin(info.annotation) is typing.Literal:
            assert variable["choices"] == list(typing.get_args(info.annotation)), field


def test_every_setting_is_documented_in_the_readme() -> None:
    table = README[README.index("## Settings") :]
    for field in Settings.model_fields:
        assert f"`{env_name(field)}`" in table, f"{env_name(field)} is not in the README's settings table"


def test_the_readme_inspector_examples_are_pinned_and_safe() -> None:
    """Pinned to the tested version; stdio ones get a data directory, HTTP ones no OAuth detour."""
    pinned = json.loads((ROOT / ".tools" / "package.json").read_text())["dependencies"]
    version = pinned["@modelcontextprotocol/inspector"]
    joined = README.replace("\\\n", " ")  # shell line continuations
    examples = re.findall(r"npx[^\n]*@modelcontextprotocol/inspector[^\n]*", joined)
    assert examples
    for example in examples:
        assert f"@modelcontextprotocol/inspector@{version} " in example, example
        if "--transport http" in example or "--server-url" in example:
            assert "--stored-auth-only" in example, example
        else:
            assert "-e EMX_DATA_DIR=" in example, example
