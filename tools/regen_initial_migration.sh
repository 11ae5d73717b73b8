#!/usr/bin/env bash
# Until the first release, the schema lives in one initial revision: regenerate it from models.py.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -f outreach/store/migrations/versions/0001_initial_schema.py
tmp=$(mktemp -d)
.venv/bin/python - "$tmp" <<'PY'
import sys
from alembic import command
from outreach.store.db import alembic_config, engine_for
engine = engine_for(f"sqlite:///{sys.argv[1]}/gen.db")
command.revision(alembic_config(engine), message="initial schema", autogenerate=True, rev_id="0001")
PY
rm -rf "$tmp"
.venv/bin/ruff check -q --fix outreach/store/migrations/versions/0001_initial_schema.py || true
.venv/bin/ruff format -q outreach/store/migrations/versions/0001_initial_schema.py
