"""Where the policy CLI finds things by default: the store file and the shipped example policies.

Kept free of heavy imports (no pydantic, SQLAlchemy or cryptography): the command line reads it
to build its options and help before any command runs.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

DEFAULT_STORE = Path("tessera-policy.db")
STORE_ENV = "TESSERA_POLICY_STORE"

# The example policies ship inside the package (policies/examples/, package data) so that
# `tessera policy init` works from an installed wheel, not only from a checkout.
EXAMPLES = ("example.yaml", "example.json", "example-v2.yaml")
STARTER = "example.yaml"


def example(name: str) -> Traversable:
    """A shipped example policy by file name (one of `EXAMPLES`)."""
    return files("policies") / "examples" / name
