"""``python -m pyro_moe``: the ``pyro-moe`` command line (see :mod:`pyro_moe.cli`)."""

import sys

from pyro_moe.cli import main

if __name__ == "__main__":
    sys.exit(main())
