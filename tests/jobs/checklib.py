"""What the check scripts share: register checks, run them once on real ranks, and print one
`CHECK {json}` line each (conftest.parse_checks turns them into test results)."""

import json
import sys
import time
import traceback

import yrmpi as yr

CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


def main() -> None:
    """Run the checks named on the command line (all by default), each isolated from the others."""
    yr.init()
    only = set(sys.argv[1:])
    for fn in CHECKS:
        if only and fn.__name__ not in only:
            continue
        start = time.monotonic()
        try:
            fn()
            result = {"check": fn.__name__, "ok": True}
        except BaseException:
            result = {"check": fn.__name__, "ok": False, "error": traceback.format_exc()}
        result["seconds"] = round(time.monotonic() - start, 3)
        print("CHECK " + json.dumps(result), flush=True)
    yr.finalize()
