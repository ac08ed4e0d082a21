"""Schema revisions of the two databases `policies` keeps: the policy store and the velocity
ledger (one package of alembic scripts each)."""
