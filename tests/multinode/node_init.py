#!/usr/bin/env python3
"""The holder of one test node: sets its hostname, private /tmp, /dev/shm and /etc/hosts, a /sys
of its network namespace, then sleeps; the node's UTS and mount namespaces live as long as it
does (the network namespace is kept by `ip netns add`).

Started by testbed.py as:
    unshare --uts --mount --propagation private nsenter --net=/run/netns/NS \
        python3 node_init.py NODE STATE_DIR [SHARED_PATH_UNDER_TMP ...]
Writes STATE_DIR/NODE.pid once the node is ready. No PID namespace: the launch agent, running in
another node, must see this process to enter its namespaces.
"""
import os
import signal
import socket
import subprocess
import sys
import time


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def main() -> None:
    node, state, *shared = sys.argv[1:]
    socket.sethostname(node)
    # Paths under /tmp every node must still see (a checkout or venv there): park, cover, restore.
    parked = []
    for i, path in enumerate(p for p in shared if os.path.isdir(p)):
        spot = os.path.join(state, f"park-{node}-{i}")
        os.makedirs(spot, exist_ok=True)
        mount("--bind", path, spot)
        parked.append((spot, path))
    mount("-t", "tmpfs", "-o", "mode=1777,size=1g", f"tmp-{node}", "/tmp")
    for spot, path in parked:
        os.makedirs(path, exist_ok=True)
        mount("--move", spot, path)
    mount("-t", "tmpfs", "-o", "mode=1777,size=1g", f"shm-{node}", "/dev/shm")
    mount("--bind", os.path.join(state, "hosts"), "/etc/hosts")
    cgroup = os.path.join(state, f"cgroup-{node}")
    keep_cgroup = os.path.isdir("/sys/fs/cgroup") and bool(os.listdir("/sys/fs/cgroup"))
    if keep_cgroup:
        os.makedirs(cgroup, exist_ok=True)
        mount("--rbind", "/sys/fs/cgroup", cgroup)
    subprocess.run(["umount", "-l", "/sys"], check=True)
    mount("-t", "sysfs", f"sys-{node}", "/sys")  # /sys/class/net: this node's interfaces only
    if keep_cgroup:
        mount("--move", cgroup, "/sys/fs/cgroup")
    with open(os.path.join(state, f"{node}.pid.tmp"), "w") as f:
        f.write(f"{os.getpid()}\n")
    os.rename(os.path.join(state, f"{node}.pid.tmp"), os.path.join(state, f"{node}.pid"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
