"""``python -m src.loadtest``: many jobs' logging replayed against one tracking store; see
:mod:`src.loadtest.tracking_load`."""

import sys

from src.loadtest.tracking_load import main

sys.exit(main())
