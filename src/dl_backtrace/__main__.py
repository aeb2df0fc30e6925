"""``python -m dl_backtrace ...`` is the ``dlbacktrace`` command."""

import sys

from .cli import main

sys.exit(main())
