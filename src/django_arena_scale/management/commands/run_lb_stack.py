"""``manage.py run_lb_stack --replicas N --port P --state-dir DIR``: the local LB stack.

Runs in the foreground: Redis, N replicas of this project and nginx on 127.0.0.1 (the
``local`` variant of ``generate_lb_config``), and with ``--prometheus`` a Prometheus that
scrapes every replica.  SIGHUP: rolling restart.  SIGINT/SIGTERM: stop
everything gracefully.  ``--action kill --target web-2`` (and restart, stop, start,
rolling-restart, stop-redis, start-redis, kill-db, start-db) acts on a stack already running
in ``DIR``.  ``--postgres [--pgbouncer] [--read-replicas K]`` adds the database tier
(:mod:`django_arena_scale.stack._postgres`).
"""

from __future__ import annotations

import os
import random
import signal
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from django_arena_scale._conf import conf
from django_arena_scale.deploy._spec import DeploymentSpec, SpecError
from django_arena_scale.stack import _control as control
from django_arena_scale.stack._errors import StackError
from django_arena_scale.stack._runner import (
    LocalStack,
    StackOptions,
    free_port_range,
    port_in_use,
)


def _app_path(dotted: str | None) -> str | None:
    """``'pkg.wsgi.application'`` (Django setting form) -> ``'pkg.wsgi:application'``."""
    if not dotted or ":" in dotted:
        return dotted
    module, _, attr = dotted.rpartition(".")
    return f"{module}:{attr}" if module else None


def _env_pairs(values: list[str], *, flag: str = "--env") -> dict[str, str]:
    env = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            msg = f"{flag} expects KEY=VALUE, got {item!r}."
            raise CommandError(msg)
        env[key] = value
    return env


def _check_database_options(options: dict[str, Any]) -> None:
    """--pgbouncer and --read-replicas describe the --postgres tier: refused without it."""
    if options["postgres"]:
        return
    for flag, value in (
        ("--pgbouncer", options["pgbouncer"]),
        ("--read-replicas", options["read_replicas"]),
        ("--pg-bin-dir", options["pg_bin_dir"]),
    ):
        if value:
            shown = (
                "" if value is True else f" {value!r}" if isinstance(value, str) else f" {value}"
            )
            msg = f"{flag}{shown} needs --postgres (the stack's own PostgreSQL)."
            raise CommandError(msg)


class Command(BaseCommand):
    help = "Run Redis, N replicas of this project and nginx on 127.0.0.1 (foreground)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--replicas", type=int, default=None, help="API replicas web-1..N.")
        parser.add_argument(
            "--port",
            "--local-port",
            dest="port",
            type=int,
            default=8080,
            help="nginx port on 127.0.0.1 (the spec's local_port, generate_lb_config's "
            "--local-port).",
        )
        parser.add_argument(
            "--state-dir", default=".arena-stack", help="Configs, logs and stack.json."
        )
        parser.add_argument("--topology", choices=["split", "single"], default=None)
        parser.add_argument("--app-server", choices=["gunicorn", "uvicorn"], default=None)
        parser.add_argument("--stream-replicas", type=int, default=None)
        parser.add_argument("--stream-workers", type=int, default=None)
        parser.add_argument("--workers", type=int, default=None)
        parser.add_argument("--threads", type=int, default=None)
        parser.add_argument("--redis-roles", choices=["split", "shared"], default=None)
        parser.add_argument("--graceful-timeout", type=int, default=None)
        parser.add_argument("--app-graceful-timeout", type=int, default=None)
        parser.add_argument(
            "--base-port", type=int, default=None, help="Replica i on BASE+i (default: free)."
        )
        parser.add_argument("--redis-port", type=int, default=None, help="First Redis port.")
        parser.add_argument("--status-port", type=int, default=None, help="nginx stub_status.")
        parser.add_argument("--nginx", default=None, help="Path of the nginx binary.")
        parser.add_argument("--redis-server", default=None, help="Path of redis-server.")
        parser.add_argument(
            "--prometheus",
            action="store_true",
            help="Also run Prometheus on a free 127.0.0.1 port, scraping every replica's "
            "metrics every second (URL and pid in stack.json).",
        )
        parser.add_argument("--prometheus-bin", default=None, help="Path of the prometheus binary.")
        parser.add_argument(
            "--postgres",
            action="store_true",
            help="Also run a throwaway PostgreSQL primary (initdb) on a free 127.0.0.1 port, "
            "migrate it and give the replicas DATABASE_URL.",
        )
        parser.add_argument(
            "--pgbouncer",
            action="store_true",
            default=None,
            help="With --postgres: PgBouncer in transaction mode in front of the primary.",
        )
        parser.add_argument(
            "--pg-bin-dir",
            default=None,
            help="With --postgres: directory of initdb, postgres and pg_basebackup "
            "(default: PATH, then the newest /usr/lib/postgresql/*/bin).",
        )
        parser.add_argument(
            "--read-replicas",
            type=int,
            default=None,
            metavar="K",
            help="With --postgres: K streaming replicas (pg_basebackup -R), DATABASE_REPLICA_URLS.",
        )
        parser.add_argument("--ready-timeout", type=float, default=60.0)
        parser.add_argument(
            "--drain-delay", type=float, default=1.0, help="Seconds between drain and SIGTERM."
        )
        parser.add_argument(
            "--env", action="append", default=[], help="KEY=VALUE for every replica."
        )
        parser.add_argument(
            "--set",
            action="append",
            default=[],
            dest="spec_set",
            metavar="FIELD=VALUE",
            help="Any DeploymentSpec field, e.g. --set rate_general=1000 --set conn_per_ip=200.",
        )
        parser.add_argument("--no-migrate", action="store_true")
        parser.add_argument(
            "--action",
            choices=control.ACTIONS,
            default=None,
            help="Act on the stack already running in --state-dir, then exit.",
        )
        parser.add_argument("--target", default=None, help="Replica or Redis name for --action.")

    def handle(self, *args: Any, **options: Any) -> None:
        state_dir = Path(options["state_dir"])
        _check_database_options(options)
        if options["action"]:
            self._act(state_dir, options["action"], options["target"])
            return
        stack = LocalStack(self._spec(options), state_dir, self._options(options), out=self._say)
        previous = {
            sig: signal.signal(sig, self._handler(stack))
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        }
        try:
            try:
                stack.start()
            except StackError as exc:
                raise CommandError(str(exc)) from exc
            self._say(f"Stack ready: {stack.url}  (state: {state_dir / 'stack.json'})")
            self._say(stack.table())
            self._say("SIGHUP: rolling restart; Ctrl-C or SIGTERM: stop.")
            status = stack.serve()
        finally:
            stack.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if status:
            msg = "nginx died; the stack was stopped."
            raise CommandError(msg, returncode=status)

    def _say(self, line: str) -> None:
        self.stdout.write(line)
        self.stdout.flush()

    def _handler(self, stack: LocalStack) -> Any:
        def handle(sig: int, frame: Any) -> None:
            if sig == signal.SIGHUP:
                stack.request_rolling_restart()
            else:
                stack.request_stop()

        return handle

    def _act(self, state_dir: Path, action: str, target: str | None) -> None:
        try:
            result = control.send(state_dir, action, target)
        except StackError as exc:
            raise CommandError(str(exc)) from exc
        if not result.get("ok"):
            raise CommandError(str(result.get("message")))
        self._say(str(result.get("message")))

    def _options(self, options: dict[str, Any]) -> StackOptions:
        return StackOptions(
            nginx_bin=options["nginx"],
            redis_bin=options["redis_server"],
            env=_env_pairs(options["env"]),
            ready_timeout=options["ready_timeout"],
            drain_delay=options["drain_delay"],
            migrate=not options["no_migrate"],
            cwd=os.getcwd(),
            prometheus=options["prometheus"],
            prometheus_bin=options["prometheus_bin"],
            postgres=options["postgres"],
            pg_bin_dir=options["pg_bin_dir"],
        )

    def _spec(self, options: dict[str, Any]) -> DeploymentSpec:
        cli: dict[str, Any] = {
            "target": "local",
            "local_port": options["port"],
            "replicas": options["replicas"],
            "topology": options["topology"],
            "app_server": options["app_server"],
            "stream_replicas": options["stream_replicas"],
            "stream_workers": options["stream_workers"],
            "workers": options["workers"],
            "threads": options["threads"],
            "redis_roles": options["redis_roles"],
            "graceful_timeout": options["graceful_timeout"],
            "app_graceful_timeout": options["app_graceful_timeout"],
            "pgbouncer": options["pgbouncer"],
            "postgres_read_replicas": options["read_replicas"],
            **_env_pairs(options["spec_set"], flag="--set"),
        }
        setting = dict(conf.DEPLOY)
        settings_module = os.environ.get("DJANGO_SETTINGS_MODULE")
        for key, value in (
            ("settings_module", settings_module),
            ("wsgi_app", _app_path(getattr(settings, "WSGI_APPLICATION", None))),
            ("asgi_app", _app_path(getattr(settings, "ASGI_APPLICATION", None))),
        ):
            if value and key not in setting:
                setting[key] = value
        try:
            spec = DeploymentSpec.from_sources(cli=cli, setting=setting)
            count = len(spec.app_services)
            ports = {
                "local_base_port": options["base_port"],
                "local_redis_port": options["redis_port"],
                "status_port": options["status_port"],
            }
            if ports["local_base_port"] is None:
                # Replica i listens on BASE+i: the range starts one below the first replica.
                # The scan starts at a random point below the ephemeral range, so that two
                # stacks started at the same moment (parallel test runs) don't pick the same
                # free range before either has bound it.
                start = random.randrange(21000, 31000)
                ports["local_base_port"] = free_port_range(count + 1, start=start)
            if ports["local_redis_port"] is None:
                ports["local_redis_port"] = free_port_range(
                    2, start=ports["local_base_port"] + count + 2
                )
            if ports["status_port"] is None:
                status = ports["local_redis_port"] + 2
                while port_in_use(status) or status == options["port"]:
                    status += 1
                ports["status_port"] = status
            return spec.replace(**ports)
        except SpecError as exc:
            raise CommandError(str(exc)) from exc
        except StackError as exc:
            raise CommandError(str(exc)) from exc
