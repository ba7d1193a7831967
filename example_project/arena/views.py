"""JSON API, login, the SSE token stream and the demo page of the example arena."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import authenticate, login, logout
from django.core.handlers.wsgi import WSGIRequest
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt, ensure_csrf_cookie
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from arena import llm, panel
from arena.models import Message, Vote
from django_arena_scale.lifecycle import drain_aware_sse, drain_aware_sse_sync

HOSTNAME = socket.gethostname()


#: The response header that names the replica which answered (the demo page shows it).
REPLICA_HEADER = "X-Replica"


def replica_name() -> str:
    """The name e2e tests use to tell replicas apart (``ARENA_REPLICA_NAME`` or host:pid)."""
    return os.environ.get("ARENA_REPLICA_NAME") or f"{HOSTNAME}:{os.getpid()}"


def with_replica(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Add ``X-Replica: <name>`` to a sync view's responses (not a secret: a service name)."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = view(request, *args, **kwargs)
        response[REPLICA_HEADER] = replica_name()
        return response

    return wrapped


class BadParameter(ValueError):
    """A request parameter the view cannot use; the 400 names it and the expected form."""

    def __init__(self, name: str, expected: str, value: object = None) -> None:
        self.name = name
        self.expected = expected
        shown = "" if value is None else f", got {_shown(value)}"
        super().__init__(f"{name} should be {expected}{shown}.")

    def response(self) -> JsonResponse:
        return JsonResponse({"error": str(self), "parameter": self.name}, status=400)


def _shown(value: object, limit: int = 40) -> str:
    """``repr`` of a client's value, cut to ``limit`` characters (a 400 never echoes a page)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_body(request: HttpRequest) -> dict[str, Any] | None:
    """The JSON object body, or None for another content type, bad JSON or a non-object.

    Deep nesting makes the parser raise RecursionError: bad input like any other.
    """
    if request.content_type != "application/json":
        return None
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return body if isinstance(body, dict) else None


def _int_param(request: HttpRequest, name: str, default: int, low: int, high: int) -> int:
    raw = request.GET.get(name)
    if raw is None:
        return default
    expected = f"an integer from {low} to {high}"
    try:
        value = int(raw)
    except ValueError:  # the text of int()'s error is Python's, not the API's
        raise BadParameter(name, expected, raw) from None
    if not low <= value <= high:
        raise BadParameter(name, expected, raw)
    return value


def _float_param(request: HttpRequest, name: str, default: float, low: float, high: float) -> float:
    raw = request.GET.get(name)
    if raw is None:
        return default
    expected = f"a number of seconds from {low:g} to {high:g}"
    try:
        value = float(raw)
    except ValueError:
        raise BadParameter(name, expected, raw) from None
    if not low <= value <= high:  # also false for nan
        raise BadParameter(name, expected, raw)
    return value


def fault_injection_enabled() -> bool:
    """Whether the ``X-Arena-Simulate`` request header is honoured (DEBUG or the setting)."""
    return bool(settings.DEBUG or getattr(settings, "ARENA_EXAMPLE_FAULT_INJECTION", False))


def _user_json(request: HttpRequest) -> str | None:
    user = request.user
    return user.get_username() if user.is_authenticated else None


# Login takes JSON only: a cross-site HTML form cannot send application/json without a CORS
# preflight, which is what makes exempting this one view from CSRF safe.  The response sets the
# csrftoken cookie and returns it, for the X-CSRFToken header of later unsafe requests.
@csrf_exempt
@require_POST
def login_view(request: HttpRequest) -> JsonResponse:
    body = _json_body(request)
    if body is None:
        return JsonResponse(
            {
                "error": "the body should be a JSON object "
                '{"username": "...", "password": "..."} sent as application/json.'
            },
            status=400,
        )
    user = authenticate(
        request, username=str(body.get("username", "")), password=str(body.get("password", ""))
    )
    if user is None:
        return JsonResponse({"error": "invalid credentials"}, status=401)
    login(request, user)
    return JsonResponse({"user": user.get_username(), "csrf_token": get_token(request)})


@require_POST
def logout_view(request: HttpRequest) -> JsonResponse:
    logout(request)
    return JsonResponse({"user": None})


@require_GET
def ping(request: HttpRequest) -> JsonResponse:
    """The trivial baseline view benchmarks compare probes against."""
    return JsonResponse({"pong": True})


@require_GET
def whoami(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {
            "replica": replica_name(),
            "hostname": HOSTNAME,
            "pid": os.getpid(),
            "user": _user_json(request),
            "session_posted": request.session.get("posted", 0),
        }
    )


@require_http_methods(["GET", "POST"])
def messages(request: HttpRequest) -> JsonResponse:
    if request.method == "GET":
        try:
            limit = _int_param(request, "limit", 50, 1, 200)
        except BadParameter as exc:
            return exc.response()
        items = Message.objects.select_related("author")[:limit]
        return JsonResponse({"messages": [m.as_json() for m in items]})
    if not request.user.is_authenticated:
        return JsonResponse({"error": "authentication required"}, status=401)
    body = _json_body(request)
    text = body.get("text") if body is not None else None
    if not isinstance(text, str) or not text.strip() or len(text) > 2000:
        return JsonResponse({"error": "expected {'text': '<1-2000 characters>'}"}, status=400)
    message = Message.objects.create(author=request.user, text=text, replica=replica_name())
    # The per-session counter is what shows that a session survives a hop to another replica.
    request.session["posted"] = request.session.get("posted", 0) + 1
    return JsonResponse(
        {"message": message.as_json(), "session_posted": request.session["posted"]}, status=201
    )


# --- SSE ----------------------------------------------------------------------------------------


def sse_event(event: str, data: dict[str, Any], *, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def _resume_from(request: HttpRequest, count: int) -> int:
    """The first token index to send: after ``Last-Event-ID`` (a browser's ``EventSource``
    sends it when it reconnects) or ``?from=`` (a page that opens a new one); 0 otherwise.

    Token ids are their indexes and every replica computes the same tokens, so a stream that
    a draining replica ended continues on another one without a token lost or repeated.
    """
    start = _int_param(request, "from", 0, 0, llm.MAX_TOKENS)
    last = request.headers.get("Last-Event-ID")
    if last is not None:
        try:
            after = int(last)
        except ValueError:
            raise BadParameter("Last-Event-ID", "a token index", last) from None
        if not 0 <= after < llm.MAX_TOKENS:
            raise BadParameter("Last-Event-ID", f"a token index from 0 to {llm.MAX_TOKENS - 1}")
        start = max(start, after + 1)
    return min(start, count)


def _voice(request: HttpRequest) -> llm.Voice | None:
    model = request.GET.get("model")
    if model is None:
        return None
    prompt = request.GET.get("prompt", "")
    try:
        return llm.Voice(model, prompt)
    except ValueError:
        if model not in llm.MODELS:
            raise BadParameter("model", f"one of {', '.join(sorted(llm.MODELS))}", model) from None
        raise BadParameter("prompt", f"at most {llm.MAX_PROMPT} characters") from None


def _stream_params(request: HttpRequest) -> tuple[int, float, llm.Simulation]:
    count = _int_param(request, "tokens", 20, 0, llm.MAX_TOKENS)
    delay = _float_param(request, "delay", settings.ARENA_TOKEN_DELAY, 0, llm.MAX_DELAY)
    # Fault injection from a request header is for tests and demos only: any client could
    # otherwise make the provider call fail.  ARENA_SIMULATE is the operator's own setting.
    header = request.headers.get("X-Arena-Simulate") if fault_injection_enabled() else None
    spec = header or settings.ARENA_SIMULATE
    try:
        return count, delay, llm.Simulation.parse(spec)
    except ValueError:
        name = "X-Arena-Simulate" if header else "ARENA_SIMULATE"
        raise BadParameter(name, llm.SIMULATE_FORM, spec) from None


def _upstream_error(exc: llm.SimulatedLLMError) -> JsonResponse:
    status = 429 if exc.status == 429 else 503 if exc.status == 503 else 502
    response = JsonResponse({"error": "upstream", "upstream_status": exc.status}, status=status)
    if exc.retry_after is not None:
        response["Retry-After"] = str(max(1, round(exc.retry_after)))
    return response


def _sse_response(content: Iterator[bytes] | AsyncIterator[bytes]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(content, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    # nginx would otherwise buffer the whole stream before sending the first byte.
    response["X-Accel-Buffering"] = "no"
    return response


async def _events_async(
    first: str | None, agen: AsyncIterator[str], *, start: int = 0, prelude: bytes = b""
) -> AsyncIterator[bytes]:
    index = start
    if prelude:
        yield prelude
    panel.opened("streams")
    try:
        if first is not None:
            yield sse_event("token", {"index": index, "token": first}, event_id=index)
            index += 1
            async for token in agen:
                yield sse_event("token", {"index": index, "token": token}, event_id=index)
                index += 1
        yield sse_event("done", {"tokens": index})
    except llm.SimulatedLLMError as exc:
        yield sse_event(
            "error", {"error": "upstream", "upstream_status": exc.status, "after": index}
        )
    finally:
        panel.closed("streams")


def _events_blocking(
    first: str | None,
    agen: AsyncIterator[str],
    loop: asyncio.AbstractEventLoop,
    prelude: bytes = b"",
    start: int = 0,
) -> Iterator[bytes]:
    events = _events_async(first, agen, start=start, prelude=prelude)
    try:
        while True:
            try:
                yield loop.run_until_complete(events.__anext__())  # type: ignore[attr-defined]
            except StopAsyncIteration:
                return
    finally:
        loop.run_until_complete(events.aclose())  # type: ignore[attr-defined]
        loop.run_until_complete(agen.aclose())  # type: ignore[attr-defined]
        loop.close()


def _stream_wsgi(
    count: int,
    delay: float,
    sim: llm.Simulation,
    prelude: bytes = b"",
    start: int = 0,
    voice: llm.Voice | None = None,
) -> HttpResponse:
    # Django would buffer an async iterator under WSGI; a private loop in this worker thread
    # keeps the stream incremental.
    loop = asyncio.new_event_loop()
    agen = llm.stream_tokens(count, delay=delay, simulation=sim, start=start, voice=voice)
    try:
        first: str | None = loop.run_until_complete(agen.__anext__())  # type: ignore[attr-defined]
    except StopAsyncIteration:
        first = None
    except llm.SimulatedLLMError as exc:
        loop.close()
        return _upstream_error(exc)
    # A draining replica ends the stream with a reconnect event (retry:) between tokens.
    events = _events_blocking(first, agen, loop, prelude, start)
    return _sse_response(drain_aware_sse_sync(events))


@require_GET
async def stream(request: HttpRequest) -> HttpResponse:
    """Server-sent events: one ``token`` event per simulated LLM token, then ``done``."""
    return await _token_stream(request)


@require_GET
async def my_stream(request: HttpRequest) -> HttpResponse:
    """The token stream of the logged-in user: a ``user`` event first; 401 when anonymous.

    Served by ``StreamRouter(..., auth=[...])`` on the event loop (no session middleware there):
    ``await request.auser()`` reads the session without blocking it.
    """
    user = await request.auser()
    if not user.is_authenticated:
        return JsonResponse({"error": "authentication required"}, status=401)
    return await _token_stream(request, prelude=sse_event("user", {"user": user.get_username()}))


async def _token_stream(request: HttpRequest, *, prelude: bytes = b"") -> HttpResponse:
    """The token stream; with ``?model=`` (the demo page) a ``meta`` event comes first, naming
    the replica, the model and the first index sent (after a reconnect, not 0)."""
    try:
        count, delay, sim = _stream_params(request)
        voice = _voice(request)
        start = _resume_from(request, count)
    except BadParameter as exc:
        return exc.response()
    if voice is not None:
        meta = {"replica": replica_name(), "model": voice.model, "from": start, "tokens": count}
        prelude += sse_event("meta", meta)
    if isinstance(request, WSGIRequest):
        return await sync_to_async(_stream_wsgi)(count, delay, sim, prelude, start, voice)
    agen = llm.stream_tokens(count, delay=delay, simulation=sim, start=start, voice=voice)
    try:
        first: str | None = await agen.__anext__()  # type: ignore[attr-defined]
    except StopAsyncIteration:
        first = None
    except llm.SimulatedLLMError as exc:
        # Failing before the first token lets the client see a real status and retry.
        return _upstream_error(exc)
    # A draining replica ends the stream with a reconnect event (retry:) at once.
    events = _events_async(first, agen, start=start, prelude=prelude)
    return _sse_response(drain_aware_sse(events))


# --- the demo page ------------------------------------------------------------------------------

#: The password shown on the page, only while it is this published default (the README's).
PUBLISHED_DEMO_PASSWORD = "demo-password"


@require_GET
@ensure_csrf_cookie
def index(request: HttpRequest) -> HttpResponse:
    """The arena page: log in, ask two simulated models, vote, chat, watch the stack."""
    demo_user = getattr(settings, "ARENA_DEMO_USER", "")
    password = getattr(settings, "ARENA_DEMO_PASSWORD", "")
    context = {
        "user_name": _user_json(request),
        "demo_user": demo_user,
        # A password the operator chose is theirs: the page shows only the published one.
        "demo_password": password if password == PUBLISHED_DEMO_PASSWORD else "",
        "replica": replica_name(),
        "models": sorted(llm.MODELS),
    }
    return render(request, "arena/index.html", context)


def _tally() -> dict[str, int]:
    counts = dict.fromkeys(Vote.WINNERS, 0)
    for row in Vote.objects.values("winner").order_by().annotate(n=Count("id")):
        counts[row["winner"]] = row["n"]
    return counts


@require_http_methods(["GET", "POST"])
def votes(request: HttpRequest) -> JsonResponse:
    """``GET``: the tally and the latest votes; ``POST {"prompt", "winner"}``: one vote.

    Stored in the database, so a vote cast through one replica counts on every replica.
    """
    if request.method == "GET":
        latest = Vote.objects.select_related("user")[:10]
        return JsonResponse({"tally": _tally(), "latest": [v.as_json() for v in latest]})
    if not request.user.is_authenticated:
        return JsonResponse({"error": "authentication required"}, status=401)
    body = _json_body(request)
    if body is None:
        return JsonResponse(
            {"error": 'the body should be a JSON object {"prompt": "...", "winner": "a"}.'},
            status=400,
        )
    prompt, winner = body.get("prompt"), body.get("winner")
    if not isinstance(prompt, str) or not prompt.strip() or len(prompt) > llm.MAX_PROMPT:
        return BadParameter("prompt", f"1 to {llm.MAX_PROMPT} characters", prompt).response()
    if winner not in Vote.WINNERS:
        return BadParameter("winner", f"one of {', '.join(Vote.WINNERS)}", winner).response()
    vote = Vote.objects.create(
        user=request.user, prompt=prompt, winner=winner, replica=replica_name()
    )
    return JsonResponse({"vote": vote.as_json(), "tally": _tally()}, status=201)


@require_GET
def stack(request: HttpRequest) -> JsonResponse:
    """The stack panel: replicas, their state, open streams and sockets, breaker states.

    Public on purpose: names, states and counts only (see ``arena.panel``).
    """
    response = JsonResponse(panel.snapshot())
    response["Cache-Control"] = "no-store"
    return response
