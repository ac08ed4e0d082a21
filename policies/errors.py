"""Typed errors of the policy engine.

Every error names what is wrong: the document path and value for schema errors, the officer and
the failed check for approvals and governance, the record position for audit-log verification.
"""

from __future__ import annotations


class PolicyError(Exception):
    """Base class of every error raised by `policies`."""


class CanonicalizationError(PolicyError):
    """A value cannot be put in canonical JSON (float, non-string key, lone surrogate, …)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
