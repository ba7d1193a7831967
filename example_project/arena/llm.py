"""A simulated LLM: an async generator of tokens with selectable failure modes.

The arena's stream view talks to this instead of a real provider so that demos, benchmarks and
e2e tests need no network.  A failure mode comes from the ``X-Arena-Simulate`` request header or
the ``ARENA_SIMULATE`` setting (environment variable of the same name), as ``;``-separated
``key=value`` pairs, for example ``fail=429;retry_after=2`` or ``break_after=3`` or
``first_delay=1.5``:

- ``fail=<status>``: fail before the first token with that upstream status (429, 500, 503...).
- ``retry_after=<seconds>``: the server hint sent with ``fail=429``/``503``.
- ``break_after=<k>``: the connection to the provider breaks after ``k`` tokens.
- ``first_delay=<seconds>``: extra latency before the first token (slow first token).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

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


class SimulatedLLMError(Exception):
    """The simulated provider failed; ``status`` is the upstream HTTP status it would send."""

    def __init__(self, status: int, *, retry_after: float | None = None, after: int = 0) -> None:
        self.status = status
        self.retry_after = retry_after
        self.after = after
        super().__init__(f"simulated provider failure: status {status} after {after} tokens.")


@dataclass(frozen=True)
class Simulation:
    """How the simulated provider behaves for one call."""

    fail: int | None = None
    retry_after: float | None = None
    break_after: int | None = None
    first_delay: float = 0.0

    @classmethod
    def parse(cls, spec: str | None) -> Simulation:
        """Parse ``"fail=429;retry_after=2"``; an empty or missing spec means a healthy call."""
        if not spec or not spec.strip():
            return cls()
        fields: dict[str, float | int] = {}
        for part in spec.replace(",", ";").split(";"):
            if not part.strip():
                continue
            key, sep, raw = part.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or key not in {"fail", "retry_after", "break_after", "first_delay"}:
                msg = (
                    f"X-Arena-Simulate part {part.strip()!r} should be one of fail=<status>, "
                    "retry_after=<s>, break_after=<k>, first_delay=<s>."
                )
                raise ValueError(msg)
            try:
                value: float | int = (
                    int(raw) if key in {"fail", "break_after"} else min(float(raw), MAX_DELAY)
                )
            except ValueError as exc:
                msg = f"X-Arena-Simulate value {raw.strip()!r} for {key!r} should be a number."
                raise ValueError(msg) from exc
            if value < 0:
                msg = f"X-Arena-Simulate value {raw.strip()!r} for {key!r} should not be negative."
                raise ValueError(msg)
            fields[key] = value
        return cls(
            fail=int(fields["fail"]) if "fail" in fields else None,
            retry_after=float(fields["retry_after"]) if "retry_after" in fields else None,
            break_after=int(fields["break_after"]) if "break_after" in fields else None,
            first_delay=float(fields.get("first_delay", 0.0)),
        )


def token_at(index: int) -> str:
    """The ``index``-th token of the simulated answer (deterministic, so order is checkable)."""
    return WORDS[index % len(WORDS)]


async def stream_tokens(
    count: int, *, delay: float, simulation: Simulation | None = None
) -> AsyncIterator[str]:
    """Yield ``count`` tokens, one every ``delay`` seconds, misbehaving as ``simulation`` says."""
    sim = simulation or Simulation()
    if sim.first_delay:
        await asyncio.sleep(sim.first_delay)
    if sim.fail is not None:
        raise SimulatedLLMError(sim.fail, retry_after=sim.retry_after)
    for index in range(count):
        if sim.break_after is not None and index >= sim.break_after:
            raise SimulatedLLMError(502, after=index)
        if delay and index:
            await asyncio.sleep(delay)
        yield token_at(index)
