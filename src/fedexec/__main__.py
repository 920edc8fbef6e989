"""``python -m fedexec``: the same as the ``fedexec`` command."""

import sys

from .cli import main

sys.exit(main())
