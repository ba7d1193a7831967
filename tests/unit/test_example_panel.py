"""The demo page's stack panel rows and the simulated models' answers (pure functions)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "example_project"))

from arena.llm import MAX_PROMPT, MODELS, Voice
from arena.panel import FORGET_AFTER, FRESH_FOR, aggregate

NOW = 1_000_000.0


def record(name: str, age: float, state: str = "ready", **extra: object) -> dict[str, object]:
    return {"replica": name, "state": state, "streams": 0, "websockets": 0, "breakers": {},
            "at": NOW - age, **extra}  # fmt: skip


def test_rows_sum_the_fresh_processes_of_each_replica() -> None:
    rows = aggregate(
        [
            record("web-2", 0.5, streams=2, websockets=1, breakers={"sim": "closed"}),
            record("web-2", 1.0, streams=3, breakers={"sim": "open"}),
            record("web-1", 0.2, state="draining", streams=1),
        ],
        NOW,
    )
    assert rows == [
        {"name": "web-1", "state": "draining", "streams": 1, "websockets": 0, "breakers": {},
         "seen_s": 0.2},
        {"name": "web-2", "state": "ready", "streams": 5, "websockets": 1,
         "breakers": {"sim": "open"}, "seen_s": 0.5},
    ]  # fmt: skip


def test_a_replica_whose_records_stopped_is_down_then_forgotten() -> None:
    rows = aggregate(
        [
            record("web-1", FRESH_FOR + 1, streams=4),  # its process exited
            record("web-3", FORGET_AFTER + 1),
            record("web-2", 0.1, state="starting"),
        ],
        NOW,
    )
    assert [(r["name"], r["state"], r["streams"]) for r in rows] == [
        ("web-1", "down", 0),
        ("web-2", "starting", 0),
    ]


def test_a_restarted_replica_is_ready_beside_its_stale_old_process() -> None:
    rows = aggregate([record("web-1", 20.0, state="draining"), record("web-1", 0.3)], NOW)
    assert [(r["name"], r["state"]) for r in rows] == [("web-1", "ready")]


def test_voice_is_deterministic_and_differs_by_model_and_prompt() -> None:
    prompt = "How do streams survive a restart?"
    a = [Voice("a", prompt).token(i) for i in range(200)]
    assert a == [Voice("a", prompt).token(i) for i in range(200)]
    assert a != [Voice("b", prompt).token(i) for i in range(200)]
    assert set(a) == set(" ".join(MODELS["a"]).split())  # whole sentences, then again
    assert all(token and " " not in token for token in a)
    openings = {Voice("a", f"question {n}").token(0) for n in range(30)}
    assert len(openings) > 1  # the prompt decides where the answer starts


def test_voice_refuses_an_unknown_model_or_a_long_prompt() -> None:
    with pytest.raises(ValueError, match="model should be one of a, b, got 'c'"):
        Voice("c")
    with pytest.raises(ValueError, match=f"at most {MAX_PROMPT} characters, got 501"):
        Voice("a", "x" * 501)
