"""The local load-balanced stack behind ``manage.py run_lb_stack``.

A small supervisor, written for this job rather than borrowed: honcho runs a Procfile but has
no per-process restart, readiness gate or ordered rolling restart; supervisord and circus are
daemons with their own configuration and control protocol, heavier than this package and
still unaware of nginx's passive health and ``/ready/``.  What it does:

* :mod:`._process` - one child in its own process group (so ``stop`` and ``kill`` reach the
  gunicorn master and all its workers), graceful stop with a deadline, then SIGKILL;
* :mod:`._upstreams` - nginx upstream ``down`` marks, when nginx's passive health skips a
  server (from its error log) and how many connections a replica still has;
* :mod:`._control` - file-based requests to a running stack (kill, restart, rolling restart);
* :mod:`._runner` - :class:`LocalStack`: Redis, replicas and nginx on 127.0.0.1, readiness,
  ``stack.json``, supervision, cleanup on every failure path;
* :mod:`._replicas` - what each replica runs (environment, gunicorn command line) and the
  ``migrate`` and ``collectstatic`` run before the replicas start;
* :mod:`._rolling` - the replica actions (stop, start, restart, kill) and the rolling restart,
  without nginx reloads;
* :mod:`._admission` - whether nginx sends a replica traffic again, read from its logs;
* :mod:`._redis_servers` - the stack's Redis servers, one per Redis service of the spec;
* :mod:`._host` - binaries, free loopback ports, one GET;
* :mod:`._postgres` - PostgreSQL and PgBouncer servers on loopback (the test fixtures use
  them too), and :mod:`._database_tier` - the stack's database tier built from them.

Every module is private: ``manage.py run_lb_stack`` is the interface; the benchmarks and
tests import the modules directly.

The rolling-restart sequence, and why it needs no nginx reload: docs/architecture.md, sections
"Local stack and rolling restart" and "A draining replica stops listening".
"""

from __future__ import annotations

from django_arena_scale.stack._errors import StackError

__all__ = ["StackError"]
