"""The package templates and the placeholder filling the renderers use."""

from __future__ import annotations

import re

import pytest

from django_arena_scale.deploy import _operations as operations
from django_arena_scale.deploy import _script as script
from django_arena_scale.deploy._spec import DeploymentSpec
from django_arena_scale.deploy._templates import fill, read_template


def test_fill_replaces_values_and_line_blocks() -> None:
    """``@NAME@`` takes a value; a ``# @NAME@`` line takes lines at its indentation."""
    template = "x=@A@\nitems=(\n    # @B@\n)\n"
    assert fill(template, {"A": "'1 2'"}, {"B": ["one", "two"]}) == (
        "x='1 2'\nitems=(\n    one\n    two\n)\n"
    )


def test_fill_never_reads_a_value_as_a_placeholder() -> None:
    """A value holding @NAME@ is inserted as it is (one pass)."""
    assert fill("@A@ @B@\n", {"A": "@B@", "B": "b"}) == "@B@ b\n"


@pytest.mark.parametrize(
    ("template", "values", "blocks", "message"),
    [
        ("@A@\n", {}, {}, "@A@ has no value"),
        ("# @L@\n", {}, {}, "@L@ has no lines"),
        ("plain\n", {"A": "1"}, {}, "no placeholder for ['A']"),
        ("plain\n", {}, {"L": ["x"]}, "no placeholder for ['L']"),
    ],
)
def test_fill_refuses_a_template_and_values_that_disagree(
    template: str, values: dict[str, str], blocks: dict[str, list[str]], message: str
) -> None:
    """A placeholder without a value, or a value without a placeholder, is an error."""
    with pytest.raises(KeyError, match=re.escape(message)):
        fill(template, values, blocks)


def test_deploy_script_is_the_package_template_filled_in() -> None:
    """deploy.sh is templates/deploy.sh with every placeholder replaced by the spec's values."""
    assert read_template("deploy.sh") == script.TEMPLATE
    text = script.render(DeploymentSpec())[script.SCRIPT]
    assert re.search(r"@[A-Z][A-Z0-9_]*@", text) is None
    assert "readonly COMPOSE_FILE=docker-compose.yml\n" in text
    assert "readonly WEB_SERVICES=(\n    web-1\n    web-2\n" in text
    # Everything after the spec block is the template's text, unchanged.
    marker = "# --- constant body"
    assert text[text.index(marker) :] == script.TEMPLATE[script.TEMPLATE.index(marker) :]


@pytest.mark.parametrize(
    "spec",
    [
        DeploymentSpec(),
        DeploymentSpec(server_name="api.example.com", trusted_proxies=("10.0.0.0/8",)),
        DeploymentSpec(pgbouncer=False, postgres_max_connections=20, workers=16, threads=16),
    ],
    ids=["defaults", "tls-proxies", "connections-exceeded"],
)
def test_operations_guide_is_the_package_template_filled_in(spec: DeploymentSpec) -> None:
    """OPERATIONS.md is templates/OPERATIONS.md with every placeholder replaced."""
    assert read_template("OPERATIONS.md") == operations.TEMPLATE
    text = operations.render(spec)[operations.OPERATIONS]
    assert re.search(r"@[A-Z][A-Z0-9_]*@", text) is None
    heading = "## Drain sequence (one replica)\n\n`rolling-restart` never reloads nginx"
    assert heading in operations.TEMPLATE
    assert heading in text
