"""System checks comparing the deployment spec (``ARENA_SCALE_DEPLOY``) with the app's settings.

generate_lb_config renders probe paths, timeouts, static paths and the drain file from the
:class:`DeploymentSpec`; the replicas run with this project's ``ARENA_SCALE_*`` settings.
Nothing else ties the two, so these checks compare them whenever ``ARENA_SCALE_DEPLOY`` is set,
building the spec as the command does (without its command-line overrides).  They read the
spec's data (``spec.app_environment``, ``spec.probe_paths``...), never the rendered files.
W050 and E030 run on a plain ``manage.py check``; the comparisons (W051-W055) run with
``--deploy``, since the replicas' settings often come from the environment the generated configs
set.  Registered with the other checks by :mod:`django_arena_scale.checks`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core.checks import Error, Warning, register

from django_arena_scale._conf import PREFIX, SETTINGS, conf
from django_arena_scale.checks._base import (
    TAG,
    Messages,
    explicit,
    in_range,
    safe,
    setting,
    shown,
)
from django_arena_scale.deploy._spec import K8S_DRAIN_FILE, DeploymentSpec

DRAIN_FILE = f"{PREFIX}DRAIN_FILE"
REGENERATE = "re-run `manage.py generate_lb_config`"

# --- messages -----------------------------------------------------------------------------------


def W050(error: str) -> Warning:
    return Warning(
        f"{PREFIX}DEPLOY is not a valid deployment spec: {error} generate_lb_config refuses it, "
        f"and the checks that compare it with the app's settings are skipped.",
        hint="Fix that key of ARENA_SCALE_DEPLOY; `manage.py generate_lb_config --help` lists "
        "every field with its default and range.",
        obj=f"{PREFIX}DEPLOY",
        id="django_arena_scale.W050",
    )


def E030(deadline: float, source: str, probe: float, from_spec: bool) -> Error:
    raise_it = (
        f"raise {PREFIX}DEPLOY['probe_timeout'] and re-run generate_lb_config"
        if from_spec
        else f"raise the probe's timeout and {PREFIX}PROBE_TIMEOUT together"
    )
    return Error(
        f"{PREFIX}READY_DEADLINE ({deadline:g} s) must be below {source}, or the load balancer "
        f"gives up before /ready/ answers.",
        hint=f"Set {PREFIX}READY_DEADLINE = {round(probe * 0.8, 3):g} (0.8 x the probe "
        f"timeout), or {raise_it}.",
        obj=f"{PREFIX}READY_DEADLINE",
        id="django_arena_scale.E030",
    )


def W051(app: str, field: str, probed: str, generated: str) -> Warning:
    return Warning(
        f"ProbeMiddleware answers under {PREFIX}PROBE_PREFIX {app!r} ({app}ready/), but the "
        f"configs generated from {field} probe {probed}: nginx, the compose healthchecks and "
        f"the Kubernetes probes get no probe answer and take every replica out.",
        hint=f"Set {PREFIX}DEPLOY['probe_prefix'] = {app!r} and {REGENERATE}, or, if the probes "
        f"must move, {PREFIX}PROBE_PREFIX = {generated!r} (the generated configs also pass it "
        f"in the environment).",
        obj=f"{PREFIX}PROBE_PREFIX",
        id="django_arena_scale.W051",
    )


def W052(hook: float, field: str, budget: int, graceful_timeout: int) -> Warning:
    return Warning(
        f"{PREFIX}SHUTDOWN_HOOK_TIMEOUT ({hook:g} s per hook) is not below {field}, the time "
        f"the generated configs give the app to end its streams and run its shutdown hooks "
        f"before the server's graceful_timeout ({graceful_timeout} s) kills the workers: one "
        f"slow hook takes the whole budget and later hooks never run.",
        hint=f"Set {PREFIX}SHUTDOWN_HOOK_TIMEOUT = {round(budget / 4, 3):g} (a quarter of the "
        f"app's budget), or raise {PREFIX}DEPLOY['app_graceful_timeout'] (with graceful_timeout "
        f"above it) and {REGENERATE}.",
        obj=f"{PREFIX}SHUTDOWN_HOOK_TIMEOUT",
        id="django_arena_scale.W052",
    )


def W053(value: str | None, generated: Mapping[str, str]) -> Warning:
    where = ", ".join(f"{path!r} in {place}" for place, path in generated.items())
    if value is None:
        problem = (
            f"{DRAIN_FILE} is not set, but the configs generated from {PREFIX}DEPLOY drain a "
            f"replica with `manage.py drain on` (deploy.sh, the Kubernetes preStop hook) and "
            f"pass the path in its environment ({where}): the drain fails and open streams are "
            f"cut at SIGTERM instead of reconnecting elsewhere."
        )
    else:
        problem = (
            f"{DRAIN_FILE} is {shown('DRAIN_FILE', value)}, not the path the configs generated "
            f"from {PREFIX}DEPLOY set in the replicas' environment ({where}): the settings "
            f"override that variable, so the drain file is not where the generated configs "
            f"expect it (on Kubernetes the root file system is read-only: only the mounted "
            f"volumes are writable)."
        )
    return Warning(
        problem,
        hint=f"Read it from the environment in settings: {DRAIN_FILE} = "
        f"os.environ.get({DRAIN_FILE!r}), and run `manage.py check --deploy` with the "
        "production environment.",
        obj=DRAIN_FILE,
        id="django_arena_scale.W053",
    )


def W054(declared: float, field: str, probe_timeout: int) -> Warning:
    return Warning(
        f"{PREFIX}PROBE_TIMEOUT is {declared:g} s, but the configs generated from {field} give "
        f"probes that long (nginx probe locations, compose healthchecks, Kubernetes "
        f"timeoutSeconds); the readiness deadline check (E030) uses the spec's value.",
        hint=f"Set {PREFIX}PROBE_TIMEOUT = {probe_timeout} or remove it; change the probes' "
        f"timeout with {PREFIX}DEPLOY['probe_timeout'].",
        obj=f"{PREFIX}PROBE_TIMEOUT",
        id="django_arena_scale.W054",
    )


def W055_URL(static_url: Any, field: str, url: str, spec_url: str) -> Warning:
    return Warning(
        f"STATIC_URL is {static_url!r}, but the nginx generated from {field} serves the "
        f"collected static files there: pages link to files nginx passes on to Django, which "
        f"does not serve them in production.",
        hint=f"Set {PREFIX}DEPLOY['static_url'] = {url!r} and {REGENERATE}, or STATIC_URL = "
        f"{spec_url!r}.",
        obj="STATIC_URL",
        id="django_arena_scale.W055",
    )


def W055_ROOT(static_root: Any, field: str, spec_root: str) -> Warning:
    return Warning(
        f"STATIC_ROOT is {'not set' if static_root is None else repr(str(static_root))}, but "
        f"docker-compose.yml generated from {field} mounts the static volume nginx serves "
        f"there: collectstatic (deploy.sh) does not fill the directory nginx serves.",
        hint=f"Set STATIC_ROOT = {spec_root!r}, or {PREFIX}DEPLOY['static_root'] to your "
        f"STATIC_ROOT and {REGENERATE}.",
        obj="STATIC_ROOT",
        id="django_arena_scale.W055",
    )


# --- the spec as generate_lb_config builds it ---------------------------------------------------


def _deploy_mapping() -> Mapping[str, Any] | None:
    """``ARENA_SCALE_DEPLOY`` when set to a non-empty dict (E002 reports another type)."""
    value = conf.raw("DEPLOY")
    if not SETTINGS["DEPLOY"].accepts(value) or not value:
        return None
    return value  # type: ignore[no-any-return]


def _deploy_spec_or_error() -> tuple[DeploymentSpec | None, str | None]:
    """(spec, None), (None, why the spec is invalid), or (None, None) when not set."""
    mapping = _deploy_mapping()
    if mapping is None:
        return None, None
    try:
        return DeploymentSpec.from_sources(None, mapping), None
    except (TypeError, ValueError) as exc:  # SpecError is a ValueError
        text = str(exc)
        return None, text if len(text) <= 300 else text[:297] + "..."


def _deploy_spec() -> DeploymentSpec | None:
    """The spec generate_lb_config renders, or None when unset or invalid (W050 says why)."""
    return _deploy_spec_or_error()[0]


def _spec_field(name: str, value: str) -> str:
    """How a message names a spec field and its value, saying when it is the default."""
    mapping = _deploy_mapping() or {}
    key = f"{PREFIX}DEPLOY[{name!r}]"
    return f"{key} ({value})" if name in mapping else f"{key} ({value}, the default)"


@register(TAG)
@safe
def check_deploy_spec(app_configs: Any = None, **kwargs: Any) -> Messages:
    _, error = _deploy_spec_or_error()
    return [] if error is None else [W050(error)]


# --- E030: the readiness deadline against the probes' timeout -----------------------------------


def _probe_timeout() -> tuple[float | None, str, bool]:
    """The timeout probes get, the setting it comes from, and whether that is the spec.

    With a valid ``ARENA_SCALE_DEPLOY`` that is the spec's ``probe_timeout``: the generated
    nginx locations, compose healthchecks and Kubernetes probes all use it.
    """
    spec = _deploy_spec()
    if spec is not None:
        field = _spec_field("probe_timeout", f"{spec.probe_timeout} s")
        return float(spec.probe_timeout), field, True
    probe = in_range("PROBE_TIMEOUT")
    return probe, f"{PREFIX}PROBE_TIMEOUT ({probe or 0:g} s)", False


@register(TAG)
@safe
def check_ready_deadline(app_configs: Any = None, **kwargs: Any) -> Messages:
    deadline = in_range("READY_DEADLINE")
    probe, source, from_spec = _probe_timeout()
    if deadline is None or probe is None or deadline < probe:
        return []
    return [E030(deadline, source, probe, from_spec)]


# --- W051-W055: the generated configs against the app's settings -------------------------------


@register(TAG, deploy=True)
@safe
def check_deploy_probe_prefix(app_configs: Any = None, **kwargs: Any) -> Messages:
    spec = _deploy_spec()
    if spec is None or not SETTINGS["PROBE_PREFIX"].accepts(conf.raw("PROBE_PREFIX")):
        return []
    app, generated = conf.PROBE_PREFIX, spec.probe_prefix
    if app == generated:
        return []
    field = _spec_field("probe_prefix", repr(generated))
    return [W051(app, field, spec.probe_paths["ready"], generated)]


@register(TAG, deploy=True)
@safe
def check_deploy_shutdown_budget(app_configs: Any = None, **kwargs: Any) -> Messages:
    spec = _deploy_spec()
    hook = in_range("SHUTDOWN_HOOK_TIMEOUT")
    if spec is None or hook is None or hook < spec.app_graceful_timeout:
        return []
    budget = spec.app_graceful_timeout
    field = _spec_field("app_graceful_timeout", f"{budget} s")
    return [W052(hook, field, budget, spec.graceful_timeout)]


def _generated_drain_files(spec: DeploymentSpec) -> dict[str, str]:
    """Where the generated configs set ``ARENA_SCALE_DRAIN_FILE``: file -> path."""
    found = {
        "docker-compose.yml": spec.app_environment.get(DRAIN_FILE),
        # k8s.config_map_env sets it over the app environment's (the pods' drain emptyDir).
        "the Kubernetes ConfigMap": K8S_DRAIN_FILE,
    }
    return {where: path for where, path in found.items() if path}


@register(TAG, deploy=True)
@safe
def check_deploy_drain_file(app_configs: Any = None, **kwargs: Any) -> Messages:
    spec = _deploy_spec()
    # The local variant's runner gives every replica a drain file of its own at start.
    if spec is None or spec.target != "compose":
        return []
    if not SETTINGS["DRAIN_FILE"].accepts(conf.raw("DRAIN_FILE")):
        return []
    generated = _generated_drain_files(spec)
    value = conf.DRAIN_FILE
    if not generated or value in generated.values():
        return []
    return [W053(value, generated)]


@register(TAG, deploy=True)
@safe
def check_deploy_probe_timeout(app_configs: Any = None, **kwargs: Any) -> Messages:
    spec = _deploy_spec()
    declared = in_range("PROBE_TIMEOUT")
    if spec is None or declared is None or not explicit("PROBE_TIMEOUT"):
        return []
    if declared == spec.probe_timeout:
        return []
    field = _spec_field("probe_timeout", f"{spec.probe_timeout} s")
    return [W054(declared, field, spec.probe_timeout)]


def _static_url(value: Any) -> str | None:
    """STATIC_URL as the path nginx sees, or None when it is elsewhere (a CDN) or unset."""
    if not isinstance(value, str) or not value or value.startswith(("http://", "https://", "//")):
        return None
    # Django serves a relative STATIC_URL under SCRIPT_NAME, '/' behind the generated nginx.
    return value if value.startswith("/") else "/" + value


@register(TAG, deploy=True)
@safe
def check_deploy_static_files(app_configs: Any = None, **kwargs: Any) -> Messages:
    from django.apps import apps

    spec = _deploy_spec()
    if spec is None or not apps.is_installed("django.contrib.staticfiles"):
        return []
    messages: Messages = []
    url = _static_url(setting("STATIC_URL"))
    if url is not None and url != spec.static_url:
        field = _spec_field("static_url", repr(spec.static_url))
        messages.append(W055_URL(setting("STATIC_URL"), field, url, spec.static_url))
    root = setting("STATIC_ROOT")
    # Only the compose target mounts a static volume (the local variant serves its own dir).
    if spec.target == "compose" and str(root or "").rstrip("/") != spec.static_root.rstrip("/"):
        field = _spec_field("static_root", repr(spec.static_root))
        messages.append(W055_ROOT(root, field, spec.static_root))
    return messages
