"""``python -m leadrelay`` runs the command line, as the ``leadrelay`` console script does."""

from __future__ import annotations

from leadrelay.cli import main

if __name__ == "__main__":
    main()
