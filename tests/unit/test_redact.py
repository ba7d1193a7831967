"""One redaction for every caller: URLs, free text, nested payloads, secret-looking names."""

from __future__ import annotations

import json
import re
from urllib.parse import quote

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from django_arena_scale import _redact
from django_arena_scale._redact import MASK, looks_secret, redact, redact_all, redact_url
from django_arena_scale.deploy import _crosscheck as crosscheck
from django_arena_scale.deploy import _k8s as k8s
from django_arena_scale.resilience._coordination import RedisCoordinator

# --- every caller uses the same functions ---------------------------------------------------


def test_every_caller_uses_the_one_implementation() -> None:
    import django_arena_scale.redis as redis_helpers
    from django_arena_scale.health import _service as service
    from django_arena_scale.resilience import _coordination as coordination

    assert redis_helpers.redact_url is _redact.redact_url
    assert coordination.redact_url is _redact.redact_url
    assert service.redact is _redact.redact
    assert service.redact_all is _redact.redact_all
    assert crosscheck.looks_secret is _redact.looks_secret
    assert k8s.looks_secret is _redact.looks_secret


# --- the cases the three old copies disagreed on -------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("redis://:p@ss@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://user:pa ss@host/0", "redis://user:***@host/0"),
        ("redis://secret@h", "redis://***@h"),
        ("redis://TOKEN:@h:1/2", "redis://***@h:1/2"),
        ("https://ghp_" + "a" * 36 + ":x-oauth-basic@github.com/x", "https://***@github.com/x"),
        ("redis://u%40x:p%3Aw@h/0", "redis://***@h/0"),
        ("redis://h:6379/0?password=pw&db=1", "redis://h:6379/0?password=***&db=1"),
        ("redis//:pw@h/0", "redis//:***@h/0"),
        (":pw@h:6379", ":***@h:6379"),
        ("redis://h:6379/0", "redis://h:6379/0"),
    ],
)
def test_redact_url_and_redact_agree(text: str, expected: str) -> None:
    assert redact_url(text) == expected
    assert redact(text) == expected
    assert redact(f"cannot connect to {text}\nnext line") == (
        f"cannot connect to {expected}\nnext line"
    )


def test_free_text_with_several_urls_and_keywords() -> None:
    text = (
        "a redis://u:p1@h/0 and https://t0k3n@x/ done; host=db password='p 2' api_key=k3 "
        "SECRET_KEY=k4 monkey=banana\npostgres://a:p5@c/d"
    )
    out = redact(text)
    for secret in ("p1", "t0k3n", "p 2", "k3", "k4", "p5"):
        assert secret not in out
    for kept in ("redis://u:***@h/0", "https://***@x/", "monkey=banana", "postgres://a:***@c/d"):
        assert kept in out


def test_redact_all_hides_values_under_secret_keys() -> None:
    payload = {
        "checks": [{"target": "redis://:hunter2@cache/0", "output": "token=abc def"}],
        "password": "plain",
        "api_key": "k",
        "n": 1,
        "keyspace": "shown",
    }
    out = redact_all(payload)
    text = json.dumps(out)
    for secret in ("hunter2", "plain", '"k"'):
        assert secret not in text
    assert "abc" not in text
    assert out["keyspace"] == "shown"
    assert out["n"] == 1


def test_coordinator_repr_is_redacted() -> None:
    coordinator = RedisCoordinator("redis://:p@ss@127.0.0.1:1/0", timeout=0.05)
    assert coordinator.url == "redis://:***@127.0.0.1:1/0"


@pytest.mark.parametrize(
    "name",
    [
        "SECRET_KEY",
        "DB_PASSWORD",
        "db_passwd",
        "PGPWD",
        "GITHUB_TOKEN",
        "OPENAI_API_KEY",
        "aws-access-key",
        "OPENAI_KEY",
        "key",
        "private_key",
        "SENTRY_DSN",
        "credentials",
    ],
)
def test_looks_secret(name: str) -> None:
    assert looks_secret(name)


@pytest.mark.parametrize(
    "name", ["DJANGO_SETTINGS_MODULE", "REDIS_URL", "monkey", "keyspace", "ARENA_SCALE_REPLICAS"]
)
def test_does_not_look_secret(name: str) -> None:
    assert not looks_secret(name)


# --- property: any URL with userinfo ---------------------------------------------------------

SCHEMES = st.sampled_from(["redis", "rediss", "postgres", "https", "amqp", "unix"])
HOSTS = st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z][a-z0-9-]{0,10}){0,2}", fullmatch=True)
PATHS = st.from_regex(r"(/[a-z0-9._~-]{0,8}){0,3}(\?db=[0-9])?", fullmatch=True)
# Userinfo characters: anything but newlines, raw and percent-escaped.
RAW = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x0b\x0c"),
    min_size=1,
    max_size=12,
)
ESCAPED = RAW.map(lambda s: quote(s, safe=""))
PARTS = st.one_of(RAW, ESCAPED, st.from_regex(r"[a-z]{1,8}", fullmatch=True))


@st.composite
def urls_with_userinfo(draw: st.DrawFn) -> tuple[str, str, str, int | None, str, str]:
    """(url, scheme, host, port, path, secret) where secret is the part that must not show."""
    scheme, host, path = draw(SCHEMES), draw(HOSTS), draw(PATHS)
    port = draw(st.none() | st.integers(1, 65535))
    shape = draw(st.sampled_from(["user:password", ":password", "token", "token:"]))
    # Markers make the secret impossible to find by accident in the visible parts.
    secret = "Q" + draw(PARTS) + "Z"
    user = draw(PARTS)
    userinfo = {
        "user:password": f"{user}:{secret}",
        ":password": f":{secret}",
        "token": secret.replace(":", "%3A"),  # one component: no raw ':'
        "token:": secret.replace(":", "%3A") + ":",
    }[shape]
    authority = host + (f":{port}" if port is not None else "")
    return f"{scheme}://{userinfo}@{authority}{path}", scheme, host, port, path, secret


@given(urls_with_userinfo())
@example(("redis://:p@ss@host/0", "redis", "host", None, "/0", "p@ss"))
@example(("redis://user:pa ss@h:1/0", "redis", "h", 1, "/0", "pa ss"))
@example(("redis://secret@h", "redis", "h", None, "", "secret"))
def test_redaction_never_shows_the_secret_and_keeps_the_rest(
    case: tuple[str, str, str, int | None, str, str],
) -> None:
    url, scheme, host, port, path, secret = case
    authority = host + (f":{port}" if port is not None else "")
    for out in (redact_url(url), redact(url), redact(f"error: {url} (retrying)")):
        assert secret not in out, out
        assert f"{scheme}://" in out
        assert f"{MASK}@{authority}{path}" in out, out
        # Whatever userinfo is shown is a plain user name and a colon, never a lone token.
        shown = out.split(f"{scheme}://", 1)[1].split(f"{MASK}@", 1)[0]
        assert shown == "" or re.fullmatch(r"[A-Za-z0-9._-]{0,32}:", shown), out
        if ":" not in url.split("://", 1)[1].rpartition("@")[0].rstrip(":"):
            assert shown == "", out  # one component (a token), possibly with an empty password


@given(st.text(max_size=60))
def test_redact_never_raises_and_is_idempotent(text: str) -> None:
    once = redact(text)
    assert redact(once) == once
