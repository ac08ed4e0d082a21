"""`python -m signer.node run --dir D`: the node process (what `tessera cluster up` starts)."""

from signer.node.cli import node_app

node_app(prog_name="python -m signer.node")
