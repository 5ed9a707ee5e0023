"""``python -m agent.cli``: the ``ladder`` command."""

from agent.cli.app import app

app()
