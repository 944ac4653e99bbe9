"""``python -m regionedit.cli`` (also what ``accelerate launch -m regionedit.cli`` runs in each process)."""

import sys

from regionedit.cli import main

sys.exit(main())
