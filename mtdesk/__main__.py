import sys

from mtdesk.cli.main import main

sys.exit(main())
