"""No generated file sets or suggests ALLOWED_HOSTS='*' or a usable default secret."""

from __future__ import annotations

import re

import pytest

from django_arena_scale.deploy import render_all
from django_arena_scale.deploy._compose import PLACEHOLDER_HOST, SECRET_KEY_COMMAND
from django_arena_scale.deploy._spec import DeploymentSpec

SPECS = {
    "defaults": DeploymentSpec(),
    "named": DeploymentSpec(server_name="arena.example.org"),
    "wildcard": DeploymentSpec(server_name="*.example.org"),
    "pgbouncer": DeploymentSpec(pgbouncer=True),
    "local": DeploymentSpec(target="local"),
}
#: KEY=value (env files, shell) or KEY: value (YAML), quoted or not.
ASSIGNMENT = re.compile(
    r"""^[ \t]*-?[ \t]*(?:name:[ \t]*)?["']?"""
    r"""(?P<key>[A-Z_]*(?:SECRET|PASSWORD|ALLOWED_HOSTS)[A-Z_]*)["']?"""
    r"""[ \t]*[:=][ \t]*["']?(?P<value>[^"'\n#]*)""",
    re.MULTILINE,
)


@pytest.fixture(params=sorted(SPECS))
def files(request: pytest.FixtureRequest) -> dict[str, str]:
    return render_all(SPECS[request.param]).files


def test_no_file_allows_every_host(files: dict[str, str]) -> None:
    for path, text in files.items():
        assert "ALLOWED_HOSTS=*" not in text.replace(" ", ""), path
        for match in ASSIGNMENT.finditer(text):
            if match["key"] == "ALLOWED_HOSTS":
                hosts = [h.strip() for h in match["value"].split(",")]
                assert "*" not in hosts, (path, match.group(0))
                assert all(hosts), (path, match.group(0))


def test_no_file_carries_a_usable_default_secret(files: dict[str, str]) -> None:
    for path, text in files.items():
        for match in ASSIGNMENT.finditer(text):
            if match["key"] == "ALLOWED_HOSTS":
                continue
            value = match["value"].strip()
            assert value == "", (path, match.group(0))
        lowered = text.lower()
        for word in ("change-me", "changeme", "django-insecure"):
            assert word not in lowered, (path, word)


def test_env_example_asks_for_a_generated_secret_key() -> None:
    text = render_all(DeploymentSpec()).files["env.example"]
    assert "\nSECRET_KEY=\n" in text
    assert SECRET_KEY_COMMAND in text
    assert "\nPOSTGRES_PASSWORD=\n" in text
    assert f"\nALLOWED_HOSTS={PLACEHOLDER_HOST}\n" in text


@pytest.mark.parametrize(
    ("server_name", "hosts"),
    [("arena.example.org", "arena.example.org"), ("*.example.org", ".example.org")],
)
def test_env_example_allowed_hosts_follow_server_name(server_name: str, hosts: str) -> None:
    text = render_all(DeploymentSpec(server_name=server_name)).files["env.example"]
    assert f"\nALLOWED_HOSTS={hosts}\n" in text
    assert PLACEHOLDER_HOST not in text


def test_k8s_config_map_never_allows_every_host() -> None:
    from django_arena_scale.deploy._k8s import config_map_env

    for spec in SPECS.values():
        env = config_map_env(spec)
        assert env.get("ALLOWED_HOSTS", "x") not in ("*", "")
        assert not [k for k in env if "SECRET" in k or "PASSWORD" in k]
