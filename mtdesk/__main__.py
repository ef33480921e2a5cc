"""``python -m mtdesk``. Guarded: multiprocessing's spawn re-imports the main module in
every gateway worker, which must not run the command again."""

import sys

from mtdesk.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
