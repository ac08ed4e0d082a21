"""The base class of every table in a node's database (`signer.node.store` for keys, shares,
presignatures and sessions; `signer.node.policy_tables` for the policy the node enforces).

Its own SQLAlchemy registry, so the node's tables and the coordinator's never share metadata;
`signer.node.migrations` creates them, and a test keeps the two in step."""

from __future__ import annotations

from sqlalchemy.orm import registry
from sqlmodel import SQLModel


class NodeTable(SQLModel, registry=registry()):
    """Own metadata: the node's and the coordinator's tables never mix."""
