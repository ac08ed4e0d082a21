"""`python -m hsm …` runs the same commands as `tessera hsm …`."""

from hsm.cli import hsm_app

hsm_app(prog_name="tessera hsm")
