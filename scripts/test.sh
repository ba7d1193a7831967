#!/usr/bin/env bash
# Run the whole test suite: every tox env (Python x Django matrix, lint, e2e) against the built
# wheel.  Exits non-zero if any env failed or was skipped.  Extra arguments go to tox, e.g.
#   bash scripts/test.sh -e py312-django61        # one cell
#   bash scripts/test.sh -e lint
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# pyenv shims answer python3.10 .. python3.13 only for the versions named in PYENV_VERSION: name
# the newest installed patch release of each minor version we support.
PYENV_ROOT="${PYENV_ROOT:-$HOME/.pyenv}"
if command -v pyenv >/dev/null 2>&1 || [ -x "$PYENV_ROOT/bin/pyenv" ]; then
    export PYENV_ROOT
    export PATH="$PYENV_ROOT/shims:$PYENV_ROOT/bin:$PATH"
    versions=()
    for minor in 3.11 3.10 3.12 3.13; do
        v="$(pyenv versions --bare 2>/dev/null | grep -E "^${minor//./\\.}\.[0-9]+$" | sort -V | tail -n 1 || true)"
        [ -n "$v" ] && versions+=("$v")
    done
    if [ "${#versions[@]}" -gt 0 ]; then
        PYENV_VERSION="$(IFS=:; echo "${versions[*]}")"
        export PYENV_VERSION
    fi
    echo "test.sh: PYENV_VERSION=${PYENV_VERSION:-<unset>}"
fi

# Debian keeps initdb/pg_ctl out of PATH; the PostgreSQL fixtures need them.
pgbin="$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
if [ -d "$pgbin" ]; then
    export PATH="$PATH:$pgbin"
fi

for minor in 3.10 3.11 3.12 3.13; do
    if ! command -v "python$minor" >/dev/null 2>&1 || ! "python$minor" -c "" >/dev/null 2>&1; then
        echo "test.sh: python$minor is missing; its tox envs will FAIL (install it, e.g. with pyenv)." >&2
    fi
done

# tox lives in a venv of its own so that it never mixes with the code under test.  tox-uv
# creates the envs and installs their deps with uv: minutes faster than pip for ten envs.
TOOLS="$ROOT/.venv-tools"
PY="$(command -v python3.12 || command -v python3)"
if ! "$TOOLS/bin/python" -c "import tox, tox_uv" >/dev/null 2>&1; then
    rm -rf "$TOOLS"
    "$PY" -m venv "$TOOLS"
    "$TOOLS/bin/python" -m pip install --quiet --upgrade pip
    "$TOOLS/bin/python" -m pip install --quiet "tox>=4.11,<5" "tox-uv>=1.11"
fi
# Only the interpreters on this machine count: uv must never download one for a missing cell.
export UV_PYTHON_DOWNLOADS=never

LOG="$(mktemp -t arena-tox.XXXXXX)"
# Each env's pytest writes a junit report here (tox.ini); the closing summary is read from them.
ARENA_TEST_REPORTS="$(mktemp -d -t arena-reports.XXXXXX)"
export ARENA_TEST_REPORTS
trap 'rm -rf "$LOG" "$ARENA_TEST_REPORTS"' EXIT
start=$(date +%s)
set +e
if [ "$#" -gt 0 ]; then
    "$TOOLS/bin/tox" run "$@" 2>&1 | tee "$LOG"
else
    # Two envs at a time: package installs overlap with test runs on a 2-core machine.
    "$TOOLS/bin/tox" run-parallel --parallel "${TOX_PARALLEL:-2}" --parallel-no-spinner 2>&1 | tee "$LOG"
fi
status=${PIPESTATUS[0]}
set -e
elapsed=$(( $(date +%s) - start ))

# A cell skipped for a missing interpreter counts as a failure.
if grep -Eq '^ *[A-Za-z0-9_.-]+: (SKIP|skipped)' "$LOG"; then
    echo "test.sh: some tox envs were skipped:" >&2
    grep -E '^ *[A-Za-z0-9_.-]+: (SKIP|skipped)' "$LOG" >&2
    status=1
fi

# One line per env and one for the whole matrix, from the envs' junit reports.
python3 - "$ARENA_TEST_REPORTS" "$elapsed" "$status" <<'PY'
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

totals = {"passed": 0, "failed": 0, "skipped": 0}
reports = sorted(Path(sys.argv[1]).glob("*.xml"))
for report in reports:
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    try:
        root = ET.parse(report).getroot()
    except ET.ParseError as exc:
        print(f"test.sh: {report.stem}: unreadable junit report ({exc})")
        continue
    suites = [root] if root.tag == "testsuite" else root.iter("testsuite")
    for suite in suites:
        for key in counts:
            counts[key] += int(suite.get(key, 0))
    failed = counts["failures"] + counts["errors"]
    passed = counts["tests"] - failed - counts["skipped"]
    print(f"  {report.stem}: {passed} passed, {failed} failed, {counts['skipped']} skipped")
    totals["passed"] += passed
    totals["failed"] += failed
    totals["skipped"] += counts["skipped"]
print(f"test.sh: {len(reports)} pytest runs in {sys.argv[2]} s, tox exit status {sys.argv[3]}")
print(
    f"total: {totals['passed']} passed, {totals['failed']} failed, {totals['skipped']} skipped"
)
PY
exit "$status"
