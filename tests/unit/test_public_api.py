"""The public API is what each package's ``__init__`` exports; every other module is private.

A module is private when its own name, or a parent's, starts with an underscore.  The public
modules are listed below, each with the reason a user names it; a new module that is neither
fails here, so nothing becomes public by accident.
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import django_arena_scale

PACKAGE = django_arena_scale.__name__

#: Public modules that are not packages, and why a user names each one.
PUBLIC_MODULES = {
    "apps": "INSTALLED_APPS loads its AppConfig",
    "asgi": "the project's asgi.py imports StreamRouter",
    "middleware": "MIDDLEWARE names ProbeMiddleware, DependencyErrorMiddleware, SessionMiddleware",
    "redis": "settings.py imports redis_cache, redis_sessions, channel_layers",
    "requestid": "MIDDLEWARE and LOGGING name RequestIDMiddleware, RequestIDFilter, JSONFormatter",
    "sessions": "SESSION_ENGINE names it",
    "urls": 'include("django_arena_scale.urls") serves the probes as views',
    "db.backends.postgresql.base": "Django loads <ENGINE>.base for the replica ENGINE",
    "lifecycle.gunicorn": "generated gunicorn configs import the server hooks from it",
    "lifecycle.uvicorn": "generated gunicorn configs name UvicornWorker as worker_class",
    "lifecycle.worker": "generated gunicorn configs name ArenaThreadWorker as worker_class",
    "management.commands.drain": "manage.py drain",
    "management.commands.generate_lb_config": "manage.py generate_lb_config",
    "management.commands.run_lb_stack": "manage.py run_lb_stack",
}

#: Public packages, and what each exports (their ``__all__``, checked below).
PUBLIC_PACKAGES = {
    "": "__version__, ArenaScaleError, SETTINGS",
    "checks": "the system check functions and ids",
    "db": "database_settings, ReplicaRouter (DATABASE_ROUTERS), ReadYourWritesMiddleware",
    "db.backends": "parent of the replica ENGINE",
    "db.backends.postgresql": "ENGINE = 'django_arena_scale.db.backends.postgresql'",
    "deploy": "DeploymentSpec, SpecError, RENDERERS, render_all",
    "health": "Check, register_check, Status, Unavailable, Runner",
    "lifecycle": "drain, warm-ups, shutdown hooks, drain-aware streams",
    "management": "Django's management command discovery",
    "management.commands": "Django's management command discovery",
    "metrics": "MetricsMiddleware (MIDDLEWARE) and the multiprocess helpers",
    "resilience": "llm_call, the error tree, breaker status and events",
    "stack": "StackError (manage.py run_lb_stack is the interface)",
}


def _full(name: str) -> str:
    return f"{PACKAGE}.{name}" if name else PACKAGE


def _modules() -> dict[str, bool]:
    """Every module of the package (relative dotted name -> is a package)."""
    found = {"": True}
    prefix = PACKAGE + "."
    for info in pkgutil.walk_packages(django_arena_scale.__path__, prefix):
        found[info.name.removeprefix(prefix)] = info.ispkg
    return found


def _is_private(name: str) -> bool:
    return any(part.startswith("_") for part in name.split("."))


def test_walk_finds_the_package() -> None:
    modules = _modules()
    assert modules["health"] is True
    assert modules["health._runner"] is False
    assert len(modules) > 50


def test_every_module_is_private_or_listed() -> None:
    """A module that is not underscored and not on the lists is public by accident."""
    public = {name for name in _modules() if not _is_private(name)}
    listed = set(PUBLIC_MODULES) | set(PUBLIC_PACKAGES)
    assert sorted(public - listed) == []


def test_listed_modules_exist_and_are_what_they_are_listed_as() -> None:
    """The lists name no module that is gone, and packages and modules are not mixed up."""
    modules = _modules()
    assert sorted(set(PUBLIC_MODULES) - set(modules)) == []
    assert sorted(set(PUBLIC_PACKAGES) - set(modules)) == []
    assert [name for name in PUBLIC_MODULES if modules[name]] == []
    assert [name for name in PUBLIC_PACKAGES if not modules[name]] == []


def test_private_check_is_by_any_segment() -> None:
    assert _is_private("deploy._k8s")
    assert _is_private("_conf")
    assert _is_private("x._inner.public_name")
    assert not _is_private("lifecycle.gunicorn")


# Packages whose public API is their exports: ``__all__`` must be there and complete.
EXPORTING = sorted(
    name
    for name in PUBLIC_PACKAGES
    if name not in {"db.backends", "management", "management.commands", "db.backends.postgresql"}
)


@pytest.mark.parametrize("name", EXPORTING)
def test_public_package_exports_import(name: str) -> None:
    """Every name in a public package's ``__all__`` can be imported from it."""
    module = importlib.import_module(_full(name))
    exported = getattr(module, "__all__", None)
    assert exported, f"{_full(name)} has no __all__"
    assert len(exported) == len(set(exported))
    missing = []
    for attr in exported:
        try:
            getattr(module, attr)
        except AttributeError as exc:
            missing.append(f"{attr} ({exc})")
    assert missing == []


@pytest.mark.parametrize("name", sorted(PUBLIC_MODULES))
def test_public_module_exports_import(name: str) -> None:
    """A public module imports, and any ``__all__`` it declares names what it has."""
    try:
        module = importlib.import_module(_full(name))
    except ModuleNotFoundError as exc:  # an optional server or driver is not installed
        if (exc.name or "").startswith(PACKAGE):
            raise
        pytest.skip(f"{exc.name} is not installed")
    assert [a for a in getattr(module, "__all__", ()) if not hasattr(module, a)] == []


def test_dotted_paths_the_settings_name_resolve() -> None:
    """The dotted paths users write in settings and server configs import."""
    from django.utils.module_loading import import_string

    for path in (
        "django_arena_scale.middleware.ProbeMiddleware",
        "django_arena_scale.middleware.DependencyErrorMiddleware",
        "django_arena_scale.middleware.SessionMiddleware",
        "django_arena_scale.requestid.RequestIDMiddleware",
        "django_arena_scale.requestid.RequestIDFilter",
        "django_arena_scale.requestid.JSONFormatter",
        "django_arena_scale.metrics.MetricsMiddleware",
        "django_arena_scale.db.ReplicaRouter",
        "django_arena_scale.db.ReadYourWritesMiddleware",
        "django_arena_scale.sessions.SessionStore",
        "django_arena_scale.asgi.StreamRouter",
        "django_arena_scale.resilience.breaker_event",
    ):
        assert import_string(path) is not None, path
