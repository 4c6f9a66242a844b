"""What the check scripts share: register checks, run them once on real ranks, and print one
`CHECK {json}` line each (conftest.parse_checks turns them into test results)."""

import functools
import json
import sys
import time
import traceback

import yrmpi as yr

CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


def ending_what_it_made(made: list):
    """A decorator for checks that create instances into `made`: whatever the check's outcome,
    they are terminated after it, so that a failure does not cascade into the next check."""

    def wrap(fn):
        @functools.wraps(fn)
        def run():
            try:
                fn()
            finally:
                for h in made:
                    try:
                        h.terminate(is_sync=True)
                    except Exception:
                        pass
                made.clear()

        return run

    return wrap


def outcome(name: str, fn) -> dict:
    """Run one check, isolated from the others: its result, error and time."""
    start = time.monotonic()
    try:
        fn()
        result = {"check": name, "ok": True}
    except BaseException:
        result = {"check": name, "ok": False, "error": traceback.format_exc()}
    result["seconds"] = round(time.monotonic() - start, 3)
    return result


def run_checks(checks: list):
    """The outcomes of the checks named on the command line (all by default), in order."""
    only = set(sys.argv[1:])
    for fn in checks:
        if not only or fn.__name__ in only:
            yield outcome(fn.__name__, fn)


def report(result: dict) -> None:
    print("CHECK " + json.dumps(result), flush=True)


def main() -> None:
    yr.init()
    for result in run_checks(CHECKS):
        report(result)
    yr.finalize()
