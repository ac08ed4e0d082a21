"""alembic's entry point for these scripts: the shared set-up in `policies.schema.run_env`."""

from __future__ import annotations

from policies.schema import run_env

run_env()
