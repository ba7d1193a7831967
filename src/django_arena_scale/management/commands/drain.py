"""``manage.py drain on|off|status``: put a replica in or out of DRAINING from outside.

For Kubernetes ``preStop`` hooks and deploy scripts: ``on`` writes ``ARENA_SCALE_DRAIN_FILE``
atomically (every worker process of the replica sees it on its next probe), ``off`` removes
it, ``status`` prints the state and exits 0 either way.
"""

from __future__ import annotations

import json
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from django_arena_scale.lifecycle import _drain as drain


class Command(BaseCommand):
    help = "Start (on) or stop (off) draining this replica, or show whether it drains (status)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("action", choices=["on", "off", "status"])
        parser.add_argument(
            "--file",
            dest="drain_file",
            default=None,
            help="Drain file to use instead of ARENA_SCALE_DRAIN_FILE.",
        )
        parser.add_argument(
            "--json", action="store_true", help="status: print one JSON object instead of text."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path = options["drain_file"] or drain.setting_path()
        action = options["action"]
        if not path:
            if action == "status":
                self._status(None, as_json=options["json"])
                return
            msg = (
                "ARENA_SCALE_DRAIN_FILE is not set, so there is no drain file to write; set it "
                "(e.g. '/tmp/arena-drain') or pass --file PATH."
            )
            raise CommandError(msg)
        if action == "on":
            try:
                drain.write(path, reason="manage.py drain on")
            except drain.DirectoryMissing as exc:
                raise CommandError(str(exc)) from exc
            self.stdout.write(f"draining: wrote {path}")
        elif action == "off":
            removed = drain.remove(path)
            self.stdout.write(f"serving: removed {path}" if removed else f"serving: {path} absent")
        else:
            self._status(path, as_json=options["json"])

    def _status(self, path: str | None, *, as_json: bool) -> None:
        draining = drain.present(path)
        state = "draining" if draining else "serving"
        if as_json:
            self.stdout.write(json.dumps({"state": state, "drain_file": path}))
        elif path is None:
            self.stdout.write(f"{state} (ARENA_SCALE_DRAIN_FILE is not set)")
        else:
            present = "present" if draining else "absent"
            self.stdout.write(f"{state} (drain file {path} {present})")
