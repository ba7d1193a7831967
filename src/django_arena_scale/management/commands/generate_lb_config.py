"""``manage.py generate_lb_config``: options -> DeploymentSpec -> renderers -> atomic writer.

Every DeploymentSpec field is an option named after it (``--stream-read-timeout 600``), so the
two cannot drift.  CLI options override ``ARENA_SCALE_DEPLOY``, which overrides the defaults.

    manage.py generate_lb_config --replicas 10 --server-name arena.example.com
    manage.py generate_lb_config --target local --output .stack --local-port 8080
    manage.py generate_lb_config --check            # exit 1 listing stale files, write nothing
    manage.py generate_lb_config --dry-run -v 2     # print what would be written
    manage.py generate_lb_config --replicas 20 --force   # overwrite files that differ

Sequence fields take comma-separated values (``--trusted-proxies 10.0.0.0/8,192.168.0.0/16``);
boolean fields are flags (``--sticky`` / ``--no-sticky``).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import re
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_arena_scale._conf import conf
from django_arena_scale.deploy import render_all
from django_arena_scale.deploy._capacity import report
from django_arena_scale.deploy._crosscheck import problems
from django_arena_scale.deploy._spec import DeploymentSpec, SpecError
from django_arena_scale.deploy._writer import WriteError, check_output, plan, write

_COMMAND_OPTIONS = ("output", "check", "dry_run", "force")


def _project_mismatches(spec: DeploymentSpec) -> list[str]:
    """Warn when the spec's app paths differ from this project's own settings."""
    from django.conf import settings

    found = []
    for field, setting in (("wsgi_app", "WSGI_APPLICATION"), ("asgi_app", "ASGI_APPLICATION")):
        dotted = getattr(settings, setting, None)
        if isinstance(dotted, str) and "." in dotted:
            module, _, attr = dotted.rpartition(".")
            ours = f"{module}:{attr}"
            if getattr(spec, field) != ours:
                found.append(
                    f"Warning: {field} is {getattr(spec, field)!r} but this project's {setting} "
                    f"is {dotted!r}; set ARENA_SCALE_DEPLOY = {{{field!r}: {ours!r}, ...}} "
                    f"or pass --{field.replace('_', '-')} {ours}."
                )
    return found


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


class Command(BaseCommand):
    help = (
        "Generate docker-compose.yml, nginx.conf, server configs, deploy.sh and k8s/ for N "
        "replicas from one validated spec (--target local: the loopback variant)."
    )

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        # No abbreviations: '--replica 3' must be an unknown option, not silently --replicas.
        kwargs.setdefault("allow_abbrev", False)
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        known = [s for action in parser._actions for s in action.option_strings]
        original = parser.error

        def error(message: str) -> Any:
            match = re.search(r"unrecognized arguments: (.+)", message)
            if match:
                for token in match.group(1).split():
                    close = difflib.get_close_matches(token.split("=")[0], known, n=1)
                    if token.startswith("-") and close:
                        message += f" (did you mean {close[0]}?)"
                message += "; the options are the DeploymentSpec fields (see --help)"
            return original(message)

        parser.error = error  # type: ignore[method-assign]
        return parser

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--output", default="deploy", help="output directory (deploy/)")
        parser.add_argument(
            "--check",
            action="store_true",
            help="write nothing; exit non-zero listing files that are missing or stale",
        )
        parser.add_argument("--dry-run", action="store_true", help="print what would be written")
        parser.add_argument(
            "--force", action="store_true", help="overwrite files whose content differs"
        )
        spec_group = parser.add_argument_group("deployment spec (override ARENA_SCALE_DEPLOY)")
        for f in dataclasses.fields(DeploymentSpec):
            meta = f.metadata
            default = f.default
            if isinstance(default, tuple):
                default = ",".join(default) or "none"
            # argparse %-formats help strings ("%(default)s"): the spec's prose is literal text.
            hint = f"{meta['help']} (default: {default})".replace("%", "%%")
            if meta["kind"] == "bool":
                spec_group.add_argument(
                    _option(f.name),
                    dest=f.name,
                    default=None,
                    action=argparse.BooleanOptionalAction,
                    help=hint,
                )
                continue
            metavar = "|".join(meta["choices"]) if meta["choices"] else f.name.upper()
            if meta["kind"] in ("strs", "strs+"):
                hint += "; comma-separated"
            spec_group.add_argument(
                _option(f.name), dest=f.name, default=None, metavar=metavar, help=hint
            )

    def handle(self, *args: Any, **options: Any) -> None:
        cli = {name: options.get(name) for name in DeploymentSpec.field_names()}
        try:
            spec = DeploymentSpec.from_sources(cli, conf.DEPLOY)
        except SpecError as exc:
            raise CommandError(str(exc)) from exc
        for warning in _project_mismatches(spec):
            self.stderr.write(self.style.WARNING(warning))
        rendered = render_all(spec)
        output = Path(options["output"])
        try:
            if options["check"]:
                self._check(rendered.files, rendered.keep_if_exists, output)
                return
            if options["dry_run"]:
                self._dry_run(spec, rendered.files, rendered.keep_if_exists, output, options)
                return

            def validate(tree: Path) -> None:
                found = problems(spec, rendered)
                if found:
                    raise CommandError("Generated files disagree: " + "; ".join(found) + ".")

            result = write(
                rendered.files,
                output,
                force=options["force"],
                keep_if_exists=rendered.keep_if_exists,
                executable=rendered.executable,
                validate=validate,
            )
        except WriteError as exc:
            raise CommandError(str(exc)) from exc
        verbosity = options["verbosity"]
        for line in result.lines(verb="did"):
            if verbosity >= 2 or (verbosity >= 1 and not line.startswith("did leave unchanged")):
                self.stdout.write(line.replace("did ", "", 1))
        written = len(result.to_write)
        self.stdout.write(
            f"{written} file(s) written, {len(result.unchanged)} unchanged, "
            f"{len(result.keep)} kept in {output}/ for {spec!r}."
        )
        if options["verbosity"] >= 1:
            self.stdout.write(report(spec), ending="")

    def _check(self, files: dict[str, str], keep: frozenset[str], output: Path) -> None:
        stale = plan(files, output, keep_if_exists=keep).stale
        if stale:
            raise CommandError(
                f"{len(stale)} file(s) in {str(output)!r} are missing or stale: "
                + ", ".join(stale)
                + " (run generate_lb_config without --check to update)."
            )
        self.stdout.write(f"{len(files)} file(s) in {output}/ are up to date.")

    def _dry_run(
        self,
        spec: DeploymentSpec,
        files: dict[str, str],
        keep: frozenset[str],
        output: Path,
        options: dict[str, Any],
    ) -> None:
        check_output(Path(output).absolute())
        result = plan(files, output, force=options["force"], keep_if_exists=keep)
        for line in result.lines():
            self.stdout.write(line)
        if options["verbosity"] >= 2:
            for rel in result.to_write:
                self.stdout.write(f"--- {rel}\n{files[rel]}", ending="")
        self.stdout.write(f"Dry run: nothing written to {output}/.")
        self.stdout.write(report(spec), ending="")
