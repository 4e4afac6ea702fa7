"""``python -m hwsearch.cli``: the ``hwsearch`` command (as ``python -m hwsearch``)."""

import sys

from hwsearch.cli import main

sys.exit(main())
