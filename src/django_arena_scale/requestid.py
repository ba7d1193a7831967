"""Request IDs: the ``X-Request-ID`` of the request being handled, on every log record.

* :data:`request_id_var` is a contextvar, so the id follows the request under WSGI (one thread
  per request) and ASGI (one task per request, copied into ``sync_to_async`` threads), and is
  visible to code the request calls: the LLM guard (``AttemptContext.request_id``, breaker
  events) and its callbacks.
* :class:`RequestIDMiddleware` (right after ``ProbeMiddleware``) reads the incoming header
  (``ARENA_SCALE_REQUEST_ID_HEADER``, nginx's ``X-Request-ID`` by default), keeps it when it is
  a plausible id (:func:`clean_request_id`: at most :data:`MAX_LENGTH` characters of
  ``[A-Za-z0-9._:-]``), else makes a new one (32 random hex characters), and returns it in the
  response.  It also has ``process_request``/``process_response``, so ``StreamRouter`` runs it
  on its fast path.  The id is for correlation only: a client can choose it, so nothing trusts it.
* :class:`RequestIDFilter` puts ``record.request_id`` on every record (``"-"`` outside a
  request); :class:`JSONFormatter` writes one JSON object per line, ``request_id`` included.

No Django import at module level: the resilience core reads :data:`request_id_var`.
"""

from __future__ import annotations

import contextvars
import datetime
import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

if TYPE_CHECKING:
    from django.http import HttpRequest, HttpResponseBase

__all__ = [
    "MAX_LENGTH",
    "JSONFormatter",
    "RequestIDFilter",
    "RequestIDMiddleware",
    "clean_request_id",
    "current_request_id",
    "new_request_id",
    "request_id_var",
]

#: Longest incoming id kept (nginx's ``$request_id`` is 32 hex characters, a UUID 36).
MAX_LENGTH = 128
_VALID = re.compile(rf"[A-Za-z0-9._:\-]{{1,{MAX_LENGTH}}}", re.ASCII)
#: What :class:`RequestIDFilter` puts on records emitted outside a request.
NO_REQUEST = "-"

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "arena_scale_request_id", default=None
)


def current_request_id() -> str | None:
    """The id of the request being handled in this context, or None outside a request."""
    return request_id_var.get()


def new_request_id() -> str:
    """32 random hex characters, like nginx's ``$request_id`` (a quarter of ``uuid4().hex``'s
    CPU: no UUID object)."""
    return secrets.token_hex(16)


def clean_request_id(value: str | None) -> str:
    """``value`` when it is a plausible request id, else a new one (:func:`new_request_id`)."""
    if value and _VALID.fullmatch(value):
        return value
    return new_request_id()


def _meta_key(header: str) -> str:
    return "HTTP_" + header.upper().replace("-", "_")


class RequestIDMiddleware:
    """Hold the request's id in :data:`request_id_var` and return it in the response header.

    Put it right after ``ProbeMiddleware`` (probes are answered before it and carry no id), so
    every later middleware's and the view's log records carry ``request_id``.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        from django_arena_scale.health import _fastconf as fastconf

        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)
        self.header: str = fastconf.get("REQUEST_ID_HEADER")
        self.meta_key = _meta_key(self.header)

    def __repr__(self) -> str:
        mode = "async" if self.async_mode else "sync"
        return f"<RequestIDMiddleware header={self.header!r} {mode}>"

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.async_mode:
            return self.__acall__(request)
        request_id = clean_request_id(request.META.get(self.meta_key))
        token = request_id_var.set(request_id)
        try:
            response: HttpResponseBase = self.get_response(request)
        except BaseException:
            request_id_var.reset(token)
            raise
        response[self.header] = request_id
        # Django logs a 4xx/5xx answer after the middleware returned, and the server iterates a
        # streamed body after that: the id stays set until the server closes the response, then
        # this WSGI thread is left without one for its next request.
        closers = getattr(response, "_resource_closers", None)
        if isinstance(closers, list):
            closers.append(_clear)
        else:  # pragma: no cover - every HttpResponseBase has the list
            request_id_var.reset(token)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        # Each ASGI request runs in a task of its own (a copy of the context): the id stays
        # set while the handler sends the body, and goes with the task.
        request_id = clean_request_id(request.META.get(self.meta_key))
        request_id_var.set(request_id)
        response: HttpResponseBase = await self.get_response(request)
        response[self.header] = request_id
        return response

    # --- StreamRouter's fast path: hooks run inline in the request's own task ---------------
    def process_request(self, request: HttpRequest) -> None:
        request_id_var.set(clean_request_id(request.META.get(self.meta_key)))

    def process_response(
        self, request: HttpRequest, response: HttpResponseBase
    ) -> HttpResponseBase:
        request_id = request_id_var.get()
        if request_id is not None:
            response[self.header] = request_id
        return response


def _clear() -> None:
    request_id_var.set(None)


class RequestIDFilter(logging.Filter):
    """Put ``request_id`` on every record (``"-"`` outside a request); never drops a record.

    Attach it to the handlers (not the loggers: a logger's filters do not see records that
    its children propagate to it)::

        "filters": {"request_id": {"()": "django_arena_scale.requestid.RequestIDFilter"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "filters": ["request_id"]}},
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get() or NO_REQUEST
        return True


#: LogRecord attributes that are not "extra" fields.
_RESERVED = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys() | {"message", "asctime"}
)


class JSONFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, request_id, exception.

    Stdlib only.  Extra fields given with ``extra=`` are included when JSON can encode them
    (else their ``repr``); Django's ``request`` extra is left out (it is an object, and its
    path is already in the message).  Use with :class:`RequestIDFilter`::

        "formatters": {"json": {"()": "django_arena_scale.requestid.JSONFormatter"}},
    """

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, tz=datetime.timezone.utc)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or request_id_var.get() or None,
        }
        for key, value in record.__dict__.items():
            if key in _RESERVED or key in payload or key == "request" or key.startswith("_"):
                continue
            payload[key] = value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            payload["stack"] = self.formatStack(record.stack_info)
        return json.dumps(payload, default=repr, ensure_ascii=False)
