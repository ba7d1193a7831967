"""The example project's views answer every bad input with a 400 JSON naming what is expected.

Through Django's test client, with the example app installed for the module: never a 500, never
the text of a Python exception.  Also: the X-Arena-Simulate header is honoured only when fault
injection is switched on (DEBUG or ARENA_EXAMPLE_FAULT_INJECTION).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client, override_settings

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "example_project"))

pytestmark = pytest.mark.django_db

# Words of Python's own error texts that must never reach a client.
PYTHON_ERROR_WORDS = ("invalid literal", "could not convert", "base 10", "Traceback", "recursion")


@pytest.fixture(autouse=True)
def example_app() -> Iterator[None]:
    with override_settings(
        INSTALLED_APPS=[*settings.INSTALLED_APPS, "arena"],
        ROOT_URLCONF="arena.urls",
        ARENA_TOKEN_DELAY=0.0,
        ARENA_SIMULATE="",
        ARENA_EXAMPLE_FAULT_INJECTION=False,
        DEBUG=False,
    ):
        yield


@pytest.fixture
def client() -> Client:
    # Exceptions become 500 responses, as they would for a real client.
    return Client(raise_request_exception=False)


def assert_clear_400(response: object, parameter: str | None = None) -> dict[str, object]:
    assert response.status_code == 400, response.content  # type: ignore[attr-defined]
    assert response["Content-Type"] == "application/json"  # type: ignore[index]
    body = json.loads(response.content)  # type: ignore[attr-defined]
    text = body["error"]
    assert isinstance(text, str)
    assert text
    assert not any(word in text for word in PYTHON_ERROR_WORDS), text
    if parameter is not None:
        assert body["parameter"] == parameter
        assert text.startswith(f"{parameter} should be ")
    return body


def nested(depth: int) -> bytes:
    return b'{"username": ' + b"[" * depth + b"]" * depth + b"}"


def test_login_deeply_nested_json_is_400(client: Client) -> None:
    """100,000 nested arrays make json.loads raise RecursionError: a 400, not a 500."""
    response = client.post("/auth/login/", nested(100_000), content_type="application/json")
    body = assert_clear_400(response)
    assert "JSON object" in str(body["error"])


@pytest.mark.parametrize("payload", [b"{", b"[1, 2]", b'"text"', b"\xff\xfe", b"null"], ids=repr)
def test_login_bad_json_is_400(client: Client, payload: bytes) -> None:
    """Malformed JSON, a non-object or bytes that are not UTF-8: a 400 naming the form."""
    response = client.post("/auth/login/", payload, content_type="application/json")
    assert '"username"' in str(assert_clear_400(response)["error"])


def test_messages_post_deeply_nested_json_is_400(client: Client) -> None:
    """The message body parser has the same guard (logged in, so the body is read)."""
    from django.contrib.auth.models import User

    client.force_login(User.objects.create_user("alice", password="pw"))
    response = client.post("/api/messages/", nested(100_000), content_type="application/json")
    assert_clear_400(response)


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("tokens=abc", "tokens"),
        ("tokens=1.5", "tokens"),
        ("tokens=-1", "tokens"),
        ("tokens=" + "9" * 5000, "tokens"),  # int() refuses more than 4300 digits
        ("delay=abc", "delay"),
        ("delay=nan", "delay"),
        ("delay=inf", "delay"),
        ("delay=-0.5", "delay"),
    ],
)
def test_stream_bad_query_is_400_naming_the_parameter(
    client: Client, query: str, parameter: str
) -> None:
    """?tokens=abc gets "tokens should be an integer from 0 to ...", not int()'s text."""
    body = assert_clear_400(client.get(f"/messages/stream/?{query}"), parameter)
    assert len(str(body["error"])) < 200


def test_stream_bad_tokens_message_is_fixed(client: Client) -> None:
    body = assert_clear_400(client.get("/messages/stream/?tokens=abc"), "tokens")
    assert body["error"] == "tokens should be an integer from 0 to 10000, got 'abc'."


@pytest.mark.parametrize("query", ["limit=abc", "limit=0", "limit=201", "limit=1e3"])
def test_messages_bad_limit_is_400(client: Client, query: str) -> None:
    assert_clear_400(client.get(f"/api/messages/?{query}"), "limit")


# --- fault injection is opt-in ------------------------------------------------------------------


def test_simulate_header_ignored_by_default(client: Client) -> None:
    """Without DEBUG or the setting, an anonymous fail=500 does not fail the provider call."""
    response = client.get(
        "/messages/stream/?tokens=2&delay=0", headers={"X-Arena-Simulate": "fail=500"}
    )
    assert response.status_code == 200
    assert b"event: done" in b"".join(response.streaming_content)  # type: ignore[attr-defined]


@pytest.mark.parametrize("switch", [{"ARENA_EXAMPLE_FAULT_INJECTION": True}, {"DEBUG": True}])
def test_simulate_header_honoured_when_enabled(client: Client, switch: dict[str, bool]) -> None:
    with override_settings(**switch):
        response = client.get(
            "/messages/stream/?tokens=2&delay=0", headers={"X-Arena-Simulate": "fail=500"}
        )
    assert response.status_code == 502
    assert json.loads(response.content) == {"error": "upstream", "upstream_status": 500}


@pytest.mark.parametrize(
    "spec", ["fail=abc", "nope=1", "retry_after=nan;fail=503", "first_delay=inf", "fail=99999"]
)
def test_simulate_header_bad_value_is_400(client: Client, spec: str) -> None:
    """A malformed spec (when honoured) is a 400 naming the header and its form."""
    with override_settings(ARENA_EXAMPLE_FAULT_INJECTION=True):
        response = client.get("/messages/stream/?tokens=1", headers={"X-Arena-Simulate": spec})
    body = assert_clear_400(response, "X-Arena-Simulate")
    assert "fail=<status>" in str(body["error"])
