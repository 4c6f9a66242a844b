"""A job to lose a node under: an instance on every node (spread), called in rounds.

    yrmpi run -n 8 --host nodea:4,nodeb:4 tests/multinode/jobs/lose_node.py SECONDS
Prints READY once every instance answered; then calls them until SECONDS have passed, printing
ROUND lines (where each answered, or the error), and exits 0.
"""
import socket
import sys
import time

import yrmpi as yr


@yr.instance(invoke_options=yr.InvokeOptions(cpu=1000, custom_extensions={"placement": "spread"}))
class Where:
    def where(self):
        return socket.gethostname()


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 60
    yr.init()
    handles = [Where.invoke() for _ in range(4)]
    t0, ready = time.monotonic(), False
    while time.monotonic() - t0 < seconds:
        row = []
        for h in handles:
            try:
                row.append(yr.get(h.where.invoke(), timeout=30))
            except Exception as exc:  # noqa: BLE001 - report what the driver saw
                row.append(type(exc).__name__)
        print("ROUND", f"{time.monotonic() - t0:.1f}", row, flush=True)
        if not ready and len(set(row)) > 1:
            print("READY", flush=True)
            ready = True
        time.sleep(0.3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
