"""The local load-balanced stack behind ``manage.py run_lb_stack``.

A small supervisor, written for this job rather than borrowed: honcho runs a Procfile but has
no per-process restart, readiness gate or ordered rolling restart; supervisord and circus are
daemons with their own configuration and control protocol, heavier than the ~500 lines here
and still unaware of nginx ``down`` marks and ``/ready/``.  What it does:

* :mod:`.process` - one child in its own process group (so ``stop`` and ``kill`` reach the
  gunicorn master and all its workers), graceful stop with a deadline, then SIGKILL;
* :mod:`.upstreams` - pure edits of nginx's upstream includes (mark a server ``down``);
* :mod:`.control` - file-based requests to a running stack (kill, restart, rolling restart);
* :mod:`.runner` - :class:`LocalStack`: Redis, replicas and nginx on 127.0.0.1, readiness,
  ``stack.json``, rolling restarts, cleanup on every failure path.
"""

from __future__ import annotations

from django_arena_scale.stack.errors import StackError

__all__ = ["StackError"]
