"""The chat consumer's per-connection token bucket (rate and burst), on a fake clock."""

from __future__ import annotations

import sys
from pathlib import Path

from django.conf import settings
from django.test import override_settings

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "example_project"))


@override_settings(INSTALLED_APPS=[*settings.INSTALLED_APPS, "arena"])
def test_token_bucket_burst_then_rate() -> None:
    from arena.consumers import TokenBucket

    now = [0.0]
    bucket = TokenBucket(5.0, 10, clock=lambda: now[0])
    assert [bucket.take() for _ in range(11)] == [True] * 10 + [False]
    now[0] += 0.2  # one token at 5 a second
    assert [bucket.take(), bucket.take()] == [True, False]
    now[0] += 100.0  # refills up to the burst, not beyond
    assert sum(bucket.take() for _ in range(20)) == 10
