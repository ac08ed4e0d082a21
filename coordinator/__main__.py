"""`python -m coordinator`: the `tessera` command line."""

from coordinator.console import main

main()
