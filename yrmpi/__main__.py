"""`python -m yrmpi script.py [args]` (rank 0 runs the script, other ranks host instances),
or `python -m yrmpi COMMAND ...` for the commands of `yrmpi` (run, sweep, report, ...)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], module_entry=True))
