"""Settings of the example arena, read from environment variables.

REDIS_URL            cache, sessions and channel layer on Redis (SESSION_REDIS_URL and
                     CHANNEL_REDIS_URL give sessions / channels a Redis of their own)
DATABASE_URL         e.g. postgres://user:pass@host/db; default: SQLite file SQLITE_PATH
                     (db.sqlite3 in this folder)
DATABASE_REPLICA_URLS
                     comma-separated URLs of streaming read replicas of DATABASE_URL
DATABASE_PGBOUNCER   1 when DATABASE_URL is PgBouncer in transaction mode
CONN_MAX_AGE         seconds each thread keeps its database connection (default 60; 0: one
                     connection per request)
DJANGO_DEBUG         1 for development only (Django's DEBUG)
SECRET_KEY           required unless DJANGO_DEBUG=1: the same long random value on every
                     replica (sessions, logins and CSRF tokens are signed with it); generate one
                     with  python -c "import secrets; print(secrets.token_urlsafe(50))"
ALLOWED_HOSTS        comma-separated; default localhost,127.0.0.1,[::1]
ARENA_HTTPS          1 behind a TLS-terminating proxy: secure cookies, HTTPS redirect, HSTS
LOG_FORMAT           json for one JSON object per log line (default: text); both carry
                     the request id
ARENA_SCALE_*        any django-arena-scale setting, e.g. ARENA_SCALE_REPLICAS=3,
                     ARENA_SCALE_DRAIN_FILE=/tmp/drain, ARENA_SCALE_STATUS_TOKEN=...
                     (lists and dicts as JSON).  The compose file and Kubernetes ConfigMap
                     that generate_lb_config renders set ARENA_SCALE_DRAIN_FILE,
                     _PROBE_PREFIX, _PROBE_TIMEOUT and _REPLICAS, so the app follows the
                     spec; `manage.py check --deploy` warns where it does not (W051-W055).
ARENA_TOKEN_DELAY    seconds between simulated LLM tokens (default 0.05)
ARENA_SIMULATE       default failure mode of the simulated LLM (see arena/llm.py)
ARENA_EXAMPLE_FAULT_INJECTION
                     1 to honour the X-Arena-Simulate request header (fault injection for
                     tests and demos; always honoured when DJANGO_DEBUG=1, never otherwise)
STATIC_ROOT          where collectstatic puts the demo page's files (default staticfiles/ here)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from django_arena_scale import SETTINGS as ARENA_SCALE_SETTINGS
from django_arena_scale.db import database_settings
from django_arena_scale.redis import channel_layers, redis_cache, redis_sessions

BASE_DIR = Path(__file__).resolve().parent.parent
env = os.environ.get


def _csv(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _arena_scale_from_env(name: str, raw: str) -> Any:
    """Convert ``ARENA_SCALE_<NAME>`` from the environment to the type the registry expects.

    A wrong value is passed on as given so that ``manage.py check`` reports it with a hint.
    """
    types = ARENA_SCALE_SETTINGS[name].types
    try:
        if bool in types and raw.lower() in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
            return raw.lower() in {"1", "true", "yes", "on"}
        if list in types or dict in types:
            return json.loads(raw)
        if int in types and float not in types:
            return int(raw)
        if float in types:
            return float(raw)
    except ValueError:
        return raw
    return raw


def _flag(name: str) -> bool:
    return env(name, "").strip().lower() in {"1", "true", "yes", "on"}


# Only for DJANGO_DEBUG=1: fixed (not per process) so that several dev replicas share it.
DEV_SECRET_KEY = "django-insecure-arena-example-dev-only-never-in-production"

DEBUG = env("DJANGO_DEBUG", "") == "1"
SECRET_KEY = env("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set the SECRET_KEY environment variable to a long random "
            "value, the same on every replica, e.g. "
            "SECRET_KEY=\"$(python -c 'import secrets; print(secrets.token_urlsafe(50))')\" "
            "(or DJANGO_DEBUG=1 for local development, which uses a fixed insecure dev key)."
        )
    SECRET_KEY = DEV_SECRET_KEY
ALLOWED_HOSTS = _csv(env("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]"))
CSRF_TRUSTED_ORIGINS = _csv(env("CSRF_TRUSTED_ORIGINS", ""))

# Behind a TLS-terminating nginx or ingress (ARENA_HTTPS=1): secure cookies and HSTS; the proxy
# tells Django the original scheme.
HTTPS = env("ARENA_HTTPS", "") == "1"
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = HTTPS
SECURE_SSL_REDIRECT = HTTPS
SECURE_HSTS_SECONDS = 3600 if HTTPS else 0

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.staticfiles",
    "channels",
    "django_arena_scale",
    "arena",
]

MIDDLEWARE = [
    # First, so probes are answered before host validation, redirects, sessions or auth.
    "django_arena_scale.middleware.ProbeMiddleware",
    # The request's X-Request-ID (nginx's, or a new one) on its log records and its response.
    "django_arena_scale.requestid.RequestIDMiddleware",
    # arena_http_requests_total / _duration_seconds by URL pattern; <prefix>metrics serves them.
    "django_arena_scale.metrics.MetricsMiddleware",
    # A view that meets a dead or full Redis (or database) answers 503
    # {"error": "dependency_unavailable"}, not a 500 (process_exception).
    "django_arena_scale.middleware.DependencyErrorMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Django's SessionMiddleware, plus the same 503 when saving the session after the view fails.
    "django_arena_scale.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    # With read replicas: a client's reads right after its writes go to the primary.
    "django_arena_scale.db.ReadYourWritesMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "arena_project.urls"
WSGI_APPLICATION = "arena_project.wsgi.application"
ASGI_APPLICATION = "arena_project.asgi.application"
TEMPLATES: list[dict[str, Any]] = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]
# The demo page's CSS and JavaScript: `manage.py collectstatic` copies them to STATIC_ROOT, which
# nginx serves at STATIC_URL (the generated `location /static/`).
STATIC_URL = "/static/"
STATIC_ROOT = env("STATIC_ROOT", "") or str(BASE_DIR / "staticfiles")

# --- database -----------------------------------------------------------------------------------
# DATABASE_URL (PostgreSQL) and DATABASE_REPLICA_URLS (comma-separated streaming replicas: reads go
# there, writes and a client's reads right after its writes to the primary); without
# DATABASE_URL, SQLite.  DATABASE_PGBOUNCER=1 when DATABASE_URL points at PgBouncer in
# transaction mode.  connect_timeout is 2 s, so a dead database fails a request fast (503).
globals().update(
    database_settings(
        env("DATABASE_URL"),
        env("DATABASE_REPLICA_URLS"),
        conn_max_age=int(env("CONN_MAX_AGE", "60")),
        pgbouncer=["default"] if _flag("DATABASE_PGBOUNCER") else False,
        default={
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": env("SQLITE_PATH", str(BASE_DIR / "db.sqlite3")),
            # Each thread keeps its connection: opening one (and its PRAGMAs) per request was
            # most of the CPU of a logged-in request (the user load).
            "CONN_MAX_AGE": int(env("CONN_MAX_AGE", "60")),
            # Several replicas may share the file: WAL and IMMEDIATE avoid "database is locked".
            "OPTIONS": {
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        },
    )
)

# --- cache, sessions, channel layer -------------------------------------------------------------
REDIS_URL = env("REDIS_URL", "")
SESSION_REDIS_URL = env("SESSION_REDIS_URL", "") or REDIS_URL
CHANNEL_REDIS_URL = env("CHANNEL_REDIS_URL", "") or REDIS_URL

# Sessions and channel messages belong on a Redis that never evicts keys; one REDIS_URL for all
# three is fine for a demo (``manage.py check --deploy`` warns about it).
CACHES = redis_cache(REDIS_URL, key_prefix="arena")
globals().update(redis_sessions(SESSION_REDIS_URL, caches=CACHES))
CHANNEL_LAYERS = channel_layers(CHANNEL_REDIS_URL)

# --- django-arena-scale -------------------------------------------------------------------------
for _name in ARENA_SCALE_SETTINGS:
    _raw = env(f"ARENA_SCALE_{_name}")
    if _raw is not None:
        globals()[f"ARENA_SCALE_{_name}"] = _arena_scale_from_env(_name, _raw)

# --- the arena itself ---------------------------------------------------------------------------
ARENA_TOKEN_DELAY = float(env("ARENA_TOKEN_DELAY", "0.05"))
ARENA_SIMULATE = env("ARENA_SIMULATE", "")
# The X-Arena-Simulate header lets any client fail the provider call: off unless asked for.
ARENA_EXAMPLE_FAULT_INJECTION = _flag("ARENA_EXAMPLE_FAULT_INJECTION")
ARENA_DEMO_USER = env("ARENA_DEMO_USER", "demo")
ARENA_DEMO_PASSWORD = env("ARENA_DEMO_PASSWORD", "demo-password")

AUTH_PASSWORD_VALIDATORS: list[dict[str, str]] = []
USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Every record carries the request's id (``-`` outside a request); LOG_FORMAT=json writes one
# JSON object per line (time, level, logger, message, request_id, exception).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "django_arena_scale.requestid.RequestIDFilter"}},
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {"()": "django_arena_scale.requestid.JSONFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "filters": ["request_id"],
            "formatter": "json" if env("LOG_FORMAT", "") == "json" else "text",
        }
    },
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "WARNING")},
}
