#!/usr/bin/env bash
# Runs the commands of docs/WALKTHROUGH.md, in order and in one shell, against
# a running platform started as the walkthrough says (a fresh database,
# `admin@shop.example` in auth_admin_emails), and puts what each answered
# under it:
#
#   bash infra/scripts/walkthrough.sh            # the document as this run answers, on stdout
#   bash infra/scripts/walkthrough.sh --write    # rewrite docs/WALKTHROUGH.md with it
#   bash infra/scripts/walkthrough.sh --check    # compare (ids, tokens, times normalized)
#
# A block right after `<!-- walkthrough: not run -->` is shown, not run.
# Another platform than the document's: WALKTHROUGH_BASE (its HTTP address),
# WALKTHROUGH_ADMIN (its admin address), WALKTHROUGH_DB (its database on
# 127.0.0.1); `bv events` reads the database from SPIN_VARIABLE_DB_URL.
# Needs curl, jq, psql and python3.
set -euo pipefail
source "$(dirname "$0")/env.sh"
for tool in curl jq psql python3; do
  command -v "$tool" >/dev/null || { echo "walkthrough: $tool is missing" >&2; exit 1; }
done
exec python3 infra/scripts/walkthrough.py "$@"
