"""``python -m pyro_moe`` and the ``pyro-moe`` script: the command line (see
:mod:`pyro_moe.cli`), with Ctrl-C during start-up (imports, parsing) handled as it is
during a run: one line, exit status 130, no traceback."""

import sys


def run() -> int:
    """Import the command line and run it; the console script's entry point."""
    try:
        from pyro_moe.cli import main

        return main()
    except KeyboardInterrupt:
        print("pyro-moe: interrupted (no output written)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(run())
