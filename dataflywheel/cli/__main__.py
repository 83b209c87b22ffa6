"""``python -m dataflywheel.cli``: the same command as ``flywheel``.

Runs in: the user's shell (the CLI process).
"""

import sys

from dataflywheel.cli.main import app

if __name__ == "__main__":
    sys.exit(app())
