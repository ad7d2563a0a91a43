"""``python -m batchnb.cli``: the same as the ``batchnb`` command."""

import sys

from . import main

sys.exit(main())
