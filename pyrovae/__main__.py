"""``python -m pyrovae`` is the ``pyrovae`` command (also under ``torchrun -m pyrovae``)."""

import sys

from pyrovae.app.cli import main

sys.exit(main())
