"""A simulated LLM provider, called through ``django_arena_scale.resilience.llm_call``.

The arena's stream view talks to this instead of a real provider so that demos, benchmarks and
e2e tests need no network.  A failure mode comes from the ``X-Arena-Simulate`` request header or
the ``ARENA_SIMULATE`` setting (environment variable of the same name), as ``;``-separated
``key=value`` pairs, for example ``fail=429;retry_after=2`` or ``break_after=3`` or
``first_delay=1.5``:

- ``fail=<status>``: fail before the first token with that upstream status (429, 500, 503...).
- ``retry_after=<seconds>``: the server hint sent with ``fail=429``/``503``.
- ``fail_attempts=<n>``: fail only the first ``n`` attempts on each deployment (transient).
- ``backup=ok``: the backup deployment is healthy (the fallback target serves the stream).
- ``break_after=<k>``: the connection to the provider breaks after ``k`` tokens.
- ``first_delay=<seconds>``: extra latency before the first token (slow first token).

The guard (:data:`GUARD`) retries before the first token (honouring ``retry_after`` within
the deadline), falls back from the ``simulator`` deployment to ``simulator:backup``, keeps a
circuit breaker per deployment (shared across replicas when
``ARENA_SCALE_BREAKER_REDIS_URL`` is set) and never restarts a stream after a token was sent.
:func:`stream_tokens` maps the guard's errors back to :class:`SimulatedLLMError` for the view:
an open breaker is a 503 with ``Retry-After``; a break after ``k`` tokens keeps ``after=k``.
Options can be overridden per deployment with ``ARENA_SCALE_LLM_PROVIDERS["simulator"]``.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from django_arena_scale.resilience import (
    ProviderUnavailable,
    RetriesExhausted,
    StreamInterrupted,
    Target,
    current_attempt,
    llm_call,
)

WORDS = (
    "The",
    "arena",
    "compares",
    "two",
    "models",
    "side",
    "by",
    "side",
    "while",
    "users",
    "vote",
    "on",
    "the",
    "better",
    "answer",
    "and",
    "every",
    "token",
    "arrives",
    "as",
    "a",
    "server",
    "sent",
    "event",
)

MAX_TOKENS = 10_000
MAX_DELAY = 10.0
_KEYS = frozenset({"fail", "retry_after", "break_after", "first_delay", "fail_attempts"})
_INT_KEYS = frozenset({"fail", "break_after", "fail_attempts"})
SIMULATE_FORM = (
    "';'-separated key=value parts: fail=<status>, retry_after=<s>, fail_attempts=<n>, "
    "backup=ok, break_after=<k>, first_delay=<s>"
)

PROVIDER = "simulator"
BACKUP = Target(PROVIDER, key="backup", kwargs={"deployment": "backup"})


class SimulatedLLMError(Exception):
    """The simulated provider failed; ``status`` is the upstream HTTP status it would send."""

    def __init__(self, status: int, *, retry_after: float | None = None, after: int = 0) -> None:
        self.status = status
        self.retry_after = retry_after
        self.after = after
        super().__init__(f"simulated provider failure: status {status} after {after} tokens.")

    # Shaped like an SDK error (status_code, headers) so the guard's classifier needs no rule.
    @property
    def status_code(self) -> int:
        return self.status

    @property
    def headers(self) -> dict[str, str]:
        return {} if self.retry_after is None else {"retry-after": f"{self.retry_after:g}"}


@dataclass(frozen=True)
class Simulation:
    """How the simulated provider behaves for one call."""

    fail: int | None = None
    retry_after: float | None = None
    break_after: int | None = None
    first_delay: float = 0.0
    fail_attempts: int | None = None
    backup_ok: bool = False

    @classmethod
    def parse(cls, spec: str | None) -> Simulation:
        """Parse ``"fail=429;retry_after=2"``; an empty or missing spec means a healthy call."""
        if not spec or not spec.strip():
            return cls()
        fields: dict[str, float | int] = {}
        backup_ok = False
        for part in spec.replace(",", ";").split(";"):
            if not part.strip():
                continue
            key, sep, raw = part.partition("=")
            key = key.strip().replace("-", "_")
            if key == "backup" and raw.strip() == "ok":
                backup_ok = True
                continue
            if not sep or key not in _KEYS:
                msg = f"X-Arena-Simulate part {part.strip()!r} should be one of {SIMULATE_FORM}."
                raise ValueError(msg)
            try:
                value: float | int = int(raw) if key in _INT_KEYS else float(raw)
            except ValueError:
                msg = f"X-Arena-Simulate value {raw.strip()!r} for {key!r} should be a number."
                raise ValueError(msg) from None
            # nan would pass every comparison below and reach asyncio.sleep / Retry-After.
            if not math.isfinite(value) or value < 0:
                msg = (
                    f"X-Arena-Simulate value {raw.strip()!r} for {key!r} should be a finite, "
                    "non-negative number."
                )
                raise ValueError(msg)
            if key == "fail" and not 100 <= value <= 599:
                msg = f"X-Arena-Simulate fail={raw.strip()!r} should be an HTTP status (100-599)."
                raise ValueError(msg)
            if key not in _INT_KEYS:
                value = min(value, MAX_DELAY)
            fields[key] = value
        return cls(
            fail=int(fields["fail"]) if "fail" in fields else None,
            retry_after=float(fields["retry_after"]) if "retry_after" in fields else None,
            break_after=int(fields["break_after"]) if "break_after" in fields else None,
            first_delay=float(fields.get("first_delay", 0.0)),
            fail_attempts=int(fields["fail_attempts"]) if "fail_attempts" in fields else None,
            backup_ok=backup_ok,
        )


def token_at(index: int) -> str:
    """The ``index``-th token of the simulated answer (deterministic, so order is checkable)."""
    return WORDS[index % len(WORDS)]


#: The simulated models of the demo page: name -> the sentences its answers are made of.
MODELS: dict[str, tuple[str, ...]] = {
    "a": (
        "Load balancing spreads requests over several replicas.",
        "A slow or restarting replica never takes the whole arena down.",
        "nginx sends each new connection to a healthy upstream.",
        "Sessions live in Redis, so a user stays logged in on every replica.",
        "The chat reaches every tab through the shared channel layer.",
        "Readiness is about this replica, not about the shared database.",
    ),
    "b": (
        "A replica that drains stops listening first.",
        "Its open streams end with a reconnect event.",
        "The browser comes back with the last event id it saw.",
        "Another replica continues from the next token, so nothing is lost or repeated.",
        "WebSockets close with code 1012 and connect again elsewhere.",
        "Votes are rows in the database that every replica shares.",
    ),
}
MAX_PROMPT = 500


@dataclass(frozen=True)
class Voice:
    """How one simulated model words its answer to one prompt.

    Token ``i`` depends only on the model, the prompt and ``i`` (a SHA-256 seed, not Python's
    per-process ``hash``): every replica computes the same answer, so a stream resumed on
    another replica from ``Last-Event-ID`` continues the same text.
    """

    model: str
    prompt: str = ""

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            msg = f"model should be one of {', '.join(sorted(MODELS))}, got {self.model!r}."
            raise ValueError(msg)
        if len(self.prompt) > MAX_PROMPT:
            msg = f"prompt should be at most {MAX_PROMPT} characters, got {len(self.prompt)}."
            raise ValueError(msg)

    @property
    def seed(self) -> int:
        digest = hashlib.sha256(f"{self.model}\0{self.prompt}".encode()).digest()
        return int.from_bytes(digest[:4], "big")

    @functools.cached_property
    def words(self) -> tuple[str, ...]:
        """The model's sentences in a prompt-dependent order (a rotation), as words."""
        sentences = MODELS[self.model]
        first = self.seed % len(sentences)
        return tuple(" ".join(sentences[first:] + sentences[:first]).split())

    def token(self, index: int) -> str:
        return self.words[index % len(self.words)]


async def simulated_provider(
    count: int,
    *,
    delay: float,
    simulation: Simulation | None = None,
    start: int = 0,
    voice: Voice | None = None,
) -> AsyncIterator[str]:
    """The raw provider: tokens ``start .. count-1``, one every ``delay`` s, misbehaving as told.

    ``voice`` words the answer (default: :func:`token_at`); ``break_after`` counts from
    ``start``, like a provider that breaks ``k`` tokens into this connection.
    """
    sim = simulation or Simulation()
    word = voice.token if voice is not None else token_at
    if sim.first_delay:
        await asyncio.sleep(sim.first_delay)
    attempt = current_attempt()
    transient_over = (
        sim.fail_attempts is not None
        and attempt is not None
        and attempt.attempt > sim.fail_attempts
    )
    if sim.fail is not None and not transient_over:
        raise SimulatedLLMError(sim.fail, retry_after=sim.retry_after)
    for sent, index in enumerate(range(start, count)):
        if sim.break_after is not None and sent >= sim.break_after:
            raise SimulatedLLMError(502, after=sent)
        if delay and sent:
            await asyncio.sleep(delay)
        yield word(index)


GUARD = llm_call(
    PROVIDER,
    fallbacks=[BACKUP],
    # A user waits for the first token: retry only while it can still arrive within 3 s.
    deadline=3.0,
    max_attempts=2,
    backoff_initial=0.2,
    first_chunk_timeout=2.5,
    idle_timeout=MAX_DELAY + 1.0,
)


@GUARD
async def _guarded(
    count: int,
    *,
    delay: float,
    simulation: Simulation,
    deployment: str = "primary",
    start: int = 0,
    voice: Voice | None = None,
) -> AsyncIterator[str]:
    sim = simulation
    if deployment == "backup" and sim.backup_ok:
        sim = Simulation(break_after=sim.break_after)
    tokens = simulated_provider(count, delay=delay, simulation=sim, start=start, voice=voice)
    async for token in tokens:
        yield token


def _status(error: BaseException | None) -> int:
    if isinstance(error, SimulatedLLMError):
        return error.status
    return 504  # the guard's own timeouts: the provider did not answer in time


async def stream_tokens(
    count: int,
    *,
    delay: float,
    simulation: Simulation | None = None,
    start: int = 0,
    voice: Voice | None = None,
) -> AsyncIterator[str]:
    """Yield tokens ``start .. count-1`` through the guard; failures surface as
    SimulatedLLMError."""
    tokens: Any = _guarded(
        count, delay=delay, simulation=simulation or Simulation(), start=start, voice=voice
    )
    try:
        async for token in tokens:
            yield token
    except ProviderUnavailable as exc:
        raise SimulatedLLMError(503, retry_after=max(1.0, exc.retry_after)) from exc
    except StreamInterrupted as exc:
        raise SimulatedLLMError(_status(exc.error), after=exc.chunks) from exc
    except RetriesExhausted as exc:
        last = exc.last_error
        retry_after = last.retry_after if isinstance(last, SimulatedLLMError) else None
        raise SimulatedLLMError(_status(last), retry_after=retry_after) from exc
    finally:
        await tokens.aclose()
