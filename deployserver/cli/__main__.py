"""``python -m deployserver.cli``: the same as the ``deployserver`` command."""

import sys

from deployserver.cli.main import main

sys.exit(main())
