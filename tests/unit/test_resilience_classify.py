"""Outcome classifier: real openai / anthropic / httpx exception classes, rules, Retry-After."""

from __future__ import annotations

import asyncio
import email.utils

import anthropic
import httpx
import openai
import pytest

from django_arena_scale.resilience import Classifier, Outcome, Verdict
from django_arena_scale.resilience._classify import parse_retry_after

URL = "https://provider.invalid/v1/chat/completions"


def _response(code: int, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(code, headers=headers or {}, request=httpx.Request("POST", URL))


def _openai_status(code: int, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    classes = {
        400: openai.BadRequestError,
        401: openai.AuthenticationError,
        403: openai.PermissionDeniedError,
        404: openai.NotFoundError,
        409: openai.ConflictError,
        422: openai.UnprocessableEntityError,
        429: openai.RateLimitError,
    }
    cls = classes.get(code, openai.InternalServerError if code >= 500 else openai.APIStatusError)
    return cls("scripted", response=_response(code, headers), body=None)  # type: ignore[arg-type]


def _anthropic_status(code: int, headers: dict[str, str] | None = None) -> Exception:
    classes = {
        400: anthropic.BadRequestError,
        429: anthropic.RateLimitError,
        529: anthropic.OverloadedError,
        500: anthropic.InternalServerError,
    }
    return classes[code]("scripted", response=_response(code, headers), body=None)  # type: ignore[arg-type]


classifier = Classifier()


@pytest.mark.parametrize("code", [408, 409, 429, 500, 502, 503, 504])
def test_classify_openai_retryable_statuses(code: int) -> None:
    """408, 409, 429 and 5xx from the openai SDK are retried and count as failures."""
    assert classifier.classify(_openai_status(code)).outcome is Outcome.RETRY


@pytest.mark.parametrize("code", [400, 401, 403, 404, 422])
def test_classify_openai_client_errors_rejected(code: int) -> None:
    """400, 401, 403, 404 and 422 are not retried and do not count against the provider."""
    assert classifier.classify(_openai_status(code)).outcome is Outcome.REJECTED


def test_classify_openai_retry_after_seconds() -> None:
    """A 429 carries the server's Retry-After (seconds) as the hint."""
    verdict = classifier.classify(_openai_status(429, {"retry-after": "7"}))
    assert verdict == Verdict(Outcome.RETRY, "http_429", 7.0)


def test_classify_openai_retry_after_ms_preferred() -> None:
    """retry-after-ms wins over Retry-After (it is more precise)."""
    verdict = classifier.classify(
        _openai_status(429, {"retry-after-ms": "250", "retry-after": "9"})
    )
    assert verdict.retry_after == 0.25


def test_classify_openai_timeout() -> None:
    """openai.APITimeoutError is a retryable timeout."""
    exc = openai.APITimeoutError(request=httpx.Request("POST", URL))  # type: ignore[arg-type]
    assert classifier.classify(exc) == Verdict(Outcome.RETRY, "timeout")


def test_classify_openai_connection_error() -> None:
    """openai.APIConnectionError is a retryable connection error."""
    exc = openai.APIConnectionError(request=httpx.Request("POST", URL))  # type: ignore[arg-type]
    assert classifier.classify(exc) == Verdict(Outcome.RETRY, "connection")


def test_classify_openai_in_stream_server_error() -> None:
    """An error frame inside an SSE stream (no HTTP status) with a server type is retryable."""
    exc = openai.APIError(
        "overloaded",
        httpx.Request("POST", URL),  # type: ignore[arg-type]
        body={"message": "overloaded", "type": "server_error"},
    )
    assert classifier.classify(exc).outcome is Outcome.RETRY


def test_classify_openai_content_filter_rejected() -> None:
    """openai's content-filter finish error is a content error: not retried."""
    exc = openai.ContentFilterFinishReasonError()
    assert classifier.classify(exc).outcome is Outcome.REJECTED


def test_classify_anthropic_overloaded() -> None:
    """anthropic.OverloadedError (529) is retryable."""
    assert classifier.classify(_anthropic_status(529)) == Verdict(Outcome.RETRY, "http_529")


def test_classify_anthropic_rate_limit_hint() -> None:
    """anthropic.RateLimitError honours retry-after-ms."""
    verdict = classifier.classify(_anthropic_status(429, {"retry-after-ms": "1500"}))
    assert (verdict.outcome, verdict.retry_after) == (Outcome.RETRY, 1.5)


def test_classify_anthropic_bad_request_rejected() -> None:
    """anthropic.BadRequestError is rejected (not retried, provider healthy)."""
    assert classifier.classify(_anthropic_status(400)).outcome is Outcome.REJECTED


def test_classify_anthropic_in_stream_overload() -> None:
    """Anthropic's in-stream ``overloaded_error`` event (HTTP 200) is retryable."""
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    exc = anthropic.APIStatusError("overloaded", response=_response(200), body=body)  # type: ignore[arg-type]
    assert classifier.classify(exc).outcome is Outcome.RETRY


def test_classify_anthropic_timeout() -> None:
    """anthropic.APITimeoutError is a retryable timeout."""
    exc = anthropic.APITimeoutError(request=httpx.Request("POST", URL))  # type: ignore[arg-type]
    assert classifier.classify(exc).reason == "timeout"


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (httpx.ReadTimeout("slow"), "timeout"),
        (httpx.ConnectError("refused"), "connection"),
        (httpx.RemoteProtocolError("reset"), "connection"),
        (ConnectionResetError(), "connection"),
        (TimeoutError(), "timeout"),
    ],
)
def test_classify_transport_errors_retryable(exc: Exception, reason: str) -> None:
    """httpx transport errors and builtin connection/timeout errors are retryable."""
    assert classifier.classify(exc) == Verdict(Outcome.RETRY, reason)


def test_classify_httpx_status_error() -> None:
    """httpx.HTTPStatusError is classified by its response's status."""
    request = httpx.Request("POST", URL)
    exc = httpx.HTTPStatusError("x", request=request, response=_response(503))
    assert classifier.classify(exc).outcome is Outcome.RETRY


def test_classify_cancellation_neutral() -> None:
    """Task cancellation is neither a failure nor a success."""
    assert classifier.classify(asyncio.CancelledError()).outcome is Outcome.NEUTRAL


def test_classify_generator_exit_neutral() -> None:
    """A consumer closing the stream (GeneratorExit) is neutral."""
    assert classifier.classify(GeneratorExit()).outcome is Outcome.NEUTRAL


def test_classify_unknown_exception_neutral() -> None:
    """A bug in caller code is neither retried nor held against the provider."""
    assert classifier.classify(KeyError("x")) == Verdict(Outcome.NEUTRAL, "unknown")


def test_classify_user_rule_by_type() -> None:
    """A user rule on an exception class comes before the built-in rules."""
    rules = Classifier()
    rules.add_rule(KeyError, Outcome.RETRY)
    assert rules.classify(KeyError("x")).outcome is Outcome.RETRY


def test_classify_user_rule_predicate() -> None:
    """A predicate rule may return a Verdict, or None to defer to later rules."""
    rules = Classifier()
    rules.add_rule(lambda exc: Verdict(Outcome.FAILURE, "quota") if "quota" in str(exc) else None)
    assert rules.classify(RuntimeError("quota")).reason == "quota"
    assert rules.classify(RuntimeError("other")).outcome is Outcome.NEUTRAL


def test_classify_user_rule_keeps_hint() -> None:
    """A rule returning an Outcome keeps the server's Retry-After hint."""
    rules = Classifier()
    rules.add_rule(openai.ConflictError, Outcome.FAILURE)
    verdict = rules.classify(_openai_status(409, {"retry-after": "3"}))
    assert (verdict.outcome, verdict.retry_after) == (Outcome.FAILURE, 3.0)


def test_classify_add_rule_type_without_outcome() -> None:
    """An exception-class rule without an Outcome is a TypeError."""
    with pytest.raises(TypeError, match="needs an Outcome"):
        Classifier().add_rule(KeyError)


def test_parse_retry_after_http_date() -> None:
    """Retry-After as an HTTP date gives the seconds until that date."""
    when = email.utils.formatdate(1_000_030, usegmt=True)
    assert parse_retry_after({"Retry-After": when}, now=1_000_000) == 30.0


def test_parse_retry_after_past_date_zero() -> None:
    """A date in the past means no wait, never a negative one."""
    when = email.utils.formatdate(999_000, usegmt=True)
    assert parse_retry_after({"retry-after": when}, now=1_000_000) == 0.0


@pytest.mark.parametrize("value", ["soon", "-1", "nan", "inf", ""])
def test_parse_retry_after_garbage_ignored(value: str) -> None:
    """Unusable hints are ignored."""
    assert parse_retry_after({"retry-after": value}) is None
