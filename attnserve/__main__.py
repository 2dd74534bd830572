"""`python -m attnserve`."""

import sys

from attnserve.cli import main

sys.exit(main())
