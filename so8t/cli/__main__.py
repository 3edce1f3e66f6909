"""``python -m so8t.cli`` runs the ``so8t`` command."""

import sys

from so8t.cli import main

sys.exit(main())
