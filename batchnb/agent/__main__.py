"""``python -m batchnb.agent``: the agent process of a detached pool (see :mod:`.service`)."""

import sys

from .service import main

sys.exit(main())
