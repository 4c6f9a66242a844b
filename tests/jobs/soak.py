"""Soak: create and end 2,000 instances in a loop; capacity must return exactly to full and the
driver's memory must stay flat. Prints SOAK lines that tests/test_faults.py checks."""

import gc
import json
import resource
import sys

import yrmpi as yr


@yr.instance(invoke_options=yr.InvokeOptions(cpu=500))
class Cell:
    def __init__(self, i):
        self.i = i

    def value(self):
        return self.i


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def cycle(start: int, batch: int) -> None:
    cells = [Cell.invoke(start + i) for i in range(batch)]
    assert yr.get([c.value.invoke() for c in cells]) == list(range(start, start + batch))
    ends = cells[: batch // 2]
    for c in ends:  # half end explicitly, half by dropping their handles
        c.terminate()
    del cells, ends


if __name__ == "__main__":
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    yr.init()
    full = yr.resources()["total"]
    batch = 2 * (full["cpu_total"] // 1000)  # fills every rank (two cells per rank)
    made = 0
    samples = []
    while made < total:
        cycle(made, batch)
        made += batch
        gc.collect()
        samples.append(rss_mb())
    for _ in range(200):  # ends are asynchronous: wait (bounded) for the last ones
        now = yr.resources()["total"]
        if now["cpu_used"] == 0 and now["memory_used"] == 0:
            break
        import time

        time.sleep(0.05)
    now = yr.resources()["total"]
    warm = samples[len(samples) // 4]
    print("SOAK " + json.dumps({"instances": made, "cpu_used": now["cpu_used"], "memory_used": now["memory_used"],
                                "cpu_total": now["cpu_total"], "full_cpu_total": full["cpu_total"],
                                "rss_warm_mb": round(warm, 1), "rss_end_mb": round(samples[-1], 1)}), flush=True)
    yr.finalize()
