"""Django system checks of django-arena-scale (tag ``django_arena_scale``).

README.md, "System checks", lists every id, when it runs and what it reports.  The checks live
by concern: :mod:`._contract` (the settings contract, mostly on a plain ``manage.py check``),
:mod:`._replicas` (running several replicas, ``check --deploy``), :mod:`._databases` (PgBouncer
in transaction mode, read replicas) and
:mod:`django_arena_scale.deploy._checks` (the deployment spec against the app's settings).  Each
module defines its messages at module level, named by id: a constant when the text is fixed, a
function of the values it names otherwise.  No check raises: an unexpected error becomes W099.

Importing this package registers every check; the check functions are importable from here.
"""

from __future__ import annotations

from typing import Any

from django_arena_scale.checks._base import TAG, Messages, declared_replicas, safe
from django_arena_scale.checks._contract import (
    PROBE_MIDDLEWARE,
    SESSION_MIDDLEWARE,
    check_cache_ttl,
    check_check_timeout,
    check_health_check_names,
    check_health_check_paths,
    check_networks,
    check_probe_middleware_first,
    check_probe_middleware_present,
    check_ranges,
    check_redis_urls,
    check_session_cache_alias,
    check_session_middleware,
    check_setting_types,
    check_unknown_settings,
)
from django_arena_scale.checks._databases import (
    check_database_aliases,
    check_pgbouncer_connection_reuse,
    check_pgbouncer_prepared_statements,
    check_pgbouncer_server_side_cursors,
    check_pgbouncer_session_state,
    check_replica_router,
    pgbouncer_aliases,
)
from django_arena_scale.checks._replicas import (
    FILE_SESSION_ENGINE,
    check_allowed_hosts_wildcard,
    check_channels_share_cache_redis,
    check_per_process_cache,
    check_per_process_channel_layer,
    check_per_process_sessions,
    check_persistent_connections,
    check_secret_key_from_environment,
    check_secret_key_placeholder,
    check_sessions_share_cache_redis,
    persistent_connection_messages,
)

# Registers the deployment-spec checks.  Imported as a module, and its names looked up on
# first use (below), because it imports ``checks._base`` itself: either may be imported first.
from django_arena_scale.deploy import _checks as _deploy_checks

_DEPLOY_CHECKS = (
    "check_deploy_drain_file",
    "check_deploy_probe_prefix",
    "check_deploy_probe_timeout",
    "check_deploy_shutdown_budget",
    "check_deploy_spec",
    "check_deploy_static_files",
    "check_ready_deadline",
)


def __getattr__(name: str) -> Any:
    if name in _DEPLOY_CHECKS:
        return getattr(_deploy_checks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FILE_SESSION_ENGINE",
    "PROBE_MIDDLEWARE",
    "SESSION_MIDDLEWARE",
    "TAG",
    "Messages",
    "check_allowed_hosts_wildcard",
    "check_cache_ttl",
    "check_channels_share_cache_redis",
    "check_check_timeout",
    "check_database_aliases",
    "check_health_check_names",
    "check_health_check_paths",
    "check_networks",
    "check_per_process_cache",
    "check_per_process_channel_layer",
    "check_per_process_sessions",
    "check_persistent_connections",
    "check_pgbouncer_connection_reuse",
    "check_pgbouncer_prepared_statements",
    "check_pgbouncer_server_side_cursors",
    "check_pgbouncer_session_state",
    "check_probe_middleware_first",
    "check_probe_middleware_present",
    "check_ranges",
    "check_redis_urls",
    "check_replica_router",
    "check_secret_key_from_environment",
    "check_secret_key_placeholder",
    "check_session_cache_alias",
    "check_session_middleware",
    "check_sessions_share_cache_redis",
    "check_setting_types",
    "check_unknown_settings",
    "declared_replicas",
    "persistent_connection_messages",
    "pgbouncer_aliases",
    "safe",
    *_DEPLOY_CHECKS,
]
