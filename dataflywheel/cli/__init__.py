"""The ``flywheel`` command (``python -m dataflywheel.cli`` runs it too).

Runs in: the user's shell (the CLI process). ``main`` builds the app from one module per
command group; see its docstring for the map.
"""

from dataflywheel.cli.main import app

__all__ = ["app"]
