"""/status/: IETF health+json body, who sees details, redaction, breakers section."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from django_arena_scale import __version__
from django_arena_scale.health._model import Check, Status, Unavailable
from django_arena_scale.lifecycle._state import get_lifecycle

TOKEN = "s3cret-status-token"
BREAKERS = "django_arena_scale.resilience._status.breaker_status"


@pytest.fixture(autouse=True)
def _status_settings(settings: Any) -> None:
    settings.ARENA_SCALE_DATABASE_CHECKS = False
    settings.ARENA_SCALE_REDIS_CHECKS = False
    settings.ARENA_SCALE_CHECKS = [Check("ok", lambda: None)]
    settings.ARENA_SCALE_STATUS_TOKEN = TOKEN
    settings.ARENA_SCALE_STATUS_ALLOWED_CIDRS = []
    settings.ARENA_SCALE_TRUSTED_PROXIES = []


def _get(client: Client, **extra: Any) -> dict[str, Any]:
    return json.loads(client.get("/status/", **extra).content)


def _detailed(client: Client) -> dict[str, Any]:
    return _get(client, HTTP_AUTHORIZATION=f"Bearer {TOKEN}")


def test_status_minimal_without_credentials(client: Client) -> None:
    """Without token, network or staff: only the overall status."""
    assert _get(client) == {"status": "pass"}


def test_status_detailed_with_bearer_token(client: Client) -> None:
    """The right bearer token unlocks the checks."""
    assert "ok" in _detailed(client)["checks"]


def test_status_wrong_token_is_minimal(client: Client) -> None:
    """A wrong token sees the minimal body."""
    assert _get(client, HTTP_AUTHORIZATION="Bearer nope") == {"status": "pass"}


def test_status_token_needs_bearer_scheme(client: Client) -> None:
    """The token under another scheme does not count."""
    assert _get(client, HTTP_AUTHORIZATION=f"Basic {TOKEN}") == {"status": "pass"}


def test_status_no_token_configured_never_detailed(client: Client, settings: Any) -> None:
    """With no STATUS_TOKEN, an empty bearer does not match."""
    settings.ARENA_SCALE_STATUS_TOKEN = None
    assert _get(client, HTTP_AUTHORIZATION="Bearer ") == {"status": "pass"}


def test_status_token_compared_in_constant_time(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token check goes through hmac.compare_digest."""
    import hmac

    calls = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    _detailed(client)
    assert calls


def test_status_detailed_from_allowed_cidr(client: Client, settings: Any) -> None:
    """REMOTE_ADDR inside STATUS_ALLOWED_CIDRS sees details."""
    settings.ARENA_SCALE_STATUS_ALLOWED_CIDRS = ["10.0.0.0/8"]
    assert "checks" in _get(client, REMOTE_ADDR="10.2.3.4")


def test_status_outside_cidr_is_minimal(client: Client, settings: Any) -> None:
    """REMOTE_ADDR outside the networks sees the minimal body."""
    settings.ARENA_SCALE_STATUS_ALLOWED_CIDRS = ["10.0.0.0/8"]
    assert "checks" not in _get(client, REMOTE_ADDR="192.0.2.1")


def test_status_forwarded_for_ignored_from_untrusted_peer(client: Client, settings: Any) -> None:
    """X-Forwarded-For from a peer that is not a trusted proxy is ignored."""
    settings.ARENA_SCALE_STATUS_ALLOWED_CIDRS = ["10.0.0.0/8"]
    body = _get(client, REMOTE_ADDR="192.0.2.1", HTTP_X_FORWARDED_FOR="10.2.3.4")
    assert "checks" not in body


def test_status_forwarded_for_honoured_from_trusted_proxy(client: Client, settings: Any) -> None:
    """X-Forwarded-For from a trusted proxy decides the client address."""
    settings.ARENA_SCALE_STATUS_ALLOWED_CIDRS = ["10.0.0.0/8"]
    settings.ARENA_SCALE_TRUSTED_PROXIES = ["127.0.0.1/32"]
    body = _get(client, REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="10.2.3.4")
    assert "checks" in body


def test_status_forwarded_for_spoofed_left_entry_ignored(client: Client, settings: Any) -> None:
    """A client-prepended X-Forwarded-For entry does not win: the proxy-appended one does."""
    settings.ARENA_SCALE_STATUS_ALLOWED_CIDRS = ["10.0.0.0/8"]
    settings.ARENA_SCALE_TRUSTED_PROXIES = ["127.0.0.1"]
    body = _get(client, REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="10.2.3.4, 192.0.2.9")
    assert "checks" not in body


def test_status_real_ip_honoured_from_trusted_proxy(client: Client, settings: Any) -> None:
    """X-Real-IP from a trusted proxy decides the client address."""
    settings.ARENA_SCALE_STATUS_ALLOWED_CIDRS = ["10.0.0.0/8"]
    settings.ARENA_SCALE_TRUSTED_PROXIES = ["127.0.0.1/32"]
    assert "checks" in _get(client, REMOTE_ADDR="127.0.0.1", HTTP_X_REAL_IP="10.9.9.9")


@pytest.mark.django_db
def test_status_detailed_for_staff_user(client: Client) -> None:
    """A logged-in staff user sees details (session read without middleware)."""
    user = get_user_model().objects.create_user("ops", password="x", is_staff=True)
    client.force_login(user)
    assert "checks" in _get(client)


@pytest.mark.django_db
def test_status_minimal_for_non_staff_user(client: Client) -> None:
    """A logged-in non-staff user sees the minimal body."""
    user = get_user_model().objects.create_user("someone", password="x")
    client.force_login(user)
    assert "checks" not in _get(client)


@pytest.mark.django_db
def test_status_staff_session_not_modified(client: Client) -> None:
    """The staff lookup sets no cookie and does not touch the session."""
    user = get_user_model().objects.create_user("ops2", password="x", is_staff=True)
    client.force_login(user)
    response = client.get("/status/")
    assert (response.cookies, response.has_header("Vary")) == ({}, False)


@pytest.mark.django_db
def test_status_staff_with_changed_password_is_minimal(client: Client) -> None:
    """A session whose auth hash no longer matches (password changed) is not trusted."""
    user = get_user_model().objects.create_user("ops3", password="x", is_staff=True)
    client.force_login(user)
    user.set_password("changed")
    user.save()
    assert "checks" not in _get(client)


def test_status_unknown_session_is_minimal(client: Client, db: None) -> None:
    """A made-up session cookie gives the minimal body, not an error."""
    client.cookies["sessionid"] = "doesnotexist"
    assert _get(client) == {"status": "pass"}


def test_status_content_type_health_json(client: Client) -> None:
    """The media type is application/health+json."""
    assert client.get("/status/")["Content-Type"] == "application/health+json"


def test_status_replica_identity(client: Client) -> None:
    """Details name hostname, pid, package version, start time and uptime."""
    replica = _detailed(client)["replica"]
    assert set(replica) == {"hostname", "pid", "version", "started_at", "uptime_s"}


def test_status_replica_version_is_package_version(client: Client) -> None:
    """releaseId and replica.version are the package version."""
    body = _detailed(client)
    assert (body["releaseId"], body["replica"]["version"]) == (__version__, __version__)


def test_status_lifecycle_state(client: Client) -> None:
    """Details include the lifecycle state."""
    get_lifecycle().begin_drain()
    assert _detailed(client)["lifecycle"]["state"] == "draining"


def test_status_draining_is_503_fail(client: Client) -> None:
    """A draining replica reports fail with 503."""
    get_lifecycle().begin_drain()
    response = client.get("/status/")
    assert (response.status_code, json.loads(response.content)["status"]) == (503, "fail")


def test_status_check_entry_has_status_and_duration(client: Client) -> None:
    """Each check shows status and duration (ms) in the IETF shape."""
    entry = _detailed(client)["checks"]["ok"][0]
    assert (entry["status"], entry["observedUnit"], isinstance(entry["observedValue"], float)) == (
        "pass",
        "ms",
        True,
    )


def test_status_failing_check_output_is_reason(client: Client, settings: Any) -> None:
    """A failing check's output is the reason enum value."""

    def down() -> None:
        raise Unavailable("secret detail")

    settings.ARENA_SCALE_CHECKS = [Check("db", down)]
    entry = _detailed(client)["checks"]["db"][0]
    assert (entry["status"], entry["output"]) == ("fail", "unavailable")


def test_status_failing_critical_check_is_503(client: Client, settings: Any) -> None:
    """A failing critical check makes /status/ answer 503."""
    settings.ARENA_SCALE_CHECKS = [Check("db", lambda: False)]
    assert client.get("/status/").status_code == 503


def test_status_non_critical_failure_is_warn(client: Client, settings: Any) -> None:
    """A failing non-critical check makes the overall status warn (200)."""
    settings.ARENA_SCALE_CHECKS = [Check("extra", lambda: False, critical=False)]
    response = client.get("/status/")
    assert (response.status_code, json.loads(response.content)["status"]) == (200, "warn")


def test_status_redacts_check_target(client: Client, settings: Any) -> None:
    """Targets (URLs/DSNs) appear without their password."""
    target = "redis://:hunter2@cache.internal:6379/0"
    settings.ARENA_SCALE_CHECKS = [Check("redis:x", lambda: None, target=target)]
    entry = _detailed(client)["checks"]["redis:x"][0]
    assert entry["target"] == "redis://:***@cache.internal:6379/0"


def test_status_redacts_breaker_strings(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """A URL inside the breaker section is redacted too."""
    monkeypatch.setattr(
        BREAKERS,
        lambda: {"openai": {"status": "pass", "state": "closed", "url": "https://u:pw1@x/"}},
    )
    assert "pw1" not in json.dumps(_detailed(client))


def test_status_breakers_section(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """breaker_status() output is shown under "breakers"."""
    monkeypatch.setattr(BREAKERS, lambda: {"openai": {"status": "pass", "state": "closed"}})
    assert _detailed(client)["breakers"] == {"openai": {"status": "pass", "state": "closed"}}


def test_status_open_breaker_is_warn_not_fail(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An open breaker (even one claiming fail) makes the replica warn, never fail."""
    monkeypatch.setattr(BREAKERS, lambda: {"openai": {"status": "fail", "state": "open"}})
    response = client.get("/status/", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    body = json.loads(response.content)
    assert (response.status_code, body["status"], body["breakers"]["openai"]["status"]) == (
        200,
        "warn",
        "warn",
    )


def test_status_breaker_error_omits_section(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If breaker_status() raises, the section is left out and the probe still answers."""

    def boom() -> dict[str, Any]:
        raise RuntimeError("redis://:pw@x")

    monkeypatch.setattr(BREAKERS, boom)
    body = _detailed(client)
    assert ("breakers" in body, body["status"]) == (False, Status.PASS.value)


def test_status_breaker_import_error_omits_section(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the resilience module cannot be imported, the section is left out."""
    monkeypatch.setitem(sys.modules, "django_arena_scale.resilience._status", None)
    assert "breakers" not in _detailed(client)


def test_status_internal_failure_is_bare_503(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected failure building /status/ is a bare JSON 503, never a traceback."""
    from django_arena_scale.health import _service as service

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("postgres://admin:pw@db/prod")

    monkeypatch.setattr(service, "status_payload", boom)
    response = client.get("/status/", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert (response.status_code, response.content) == (503, b'{"status":"fail"}')
