"""Several "nodes" on this one machine, for the multi-node tests: Linux namespaces that Open MPI,
PRRTE and yrmpi see as distinct hosts.

    bed = Testbed(3)           # nodea, nodeb, nodec; needs root, iproute2, util-linux
    bed.run(["yrmpi", "run", "--host", bed.hosts(4), "-n", "12", "job.py"])
    bed.kill_node("nodeb")     # every process of the node, as a node that dies
    bed.cut("nodeb")           # its link down: nothing more leaves or reaches it
    bed.down()                 # every process in the nodes killed, every namespace deleted

Each node has a network namespace with a veth into a bridge that lives in a namespace of its own
(no address there, nothing routed out: the private /24 exists only inside the namespaces made
here), its own hostname, a private /tmp, /dev/shm and /etc/hosts. Everything else is shared, as on
a cluster with a shared file system (the checkout and the venv; those under /tmp are bind-mounted
back). Names carry a random suffix, so concurrent runs cannot collide. There is no PID namespace
per node: "every process of a node" is every process in its network namespace.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
NAMES = ("nodea", "nodeb", "nodec")


class TestbedUnavailable(RuntimeError):
    """The machine cannot make the nodes (not root, no iproute2, no namespaces)."""

    __test__ = False


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


class Testbed:
    __test__ = False  # (not a test class)

    def __init__(self, nodes: int = 2) -> None:
        if os.geteuid() != 0:
            raise TestbedUnavailable("needs root (network, mount and UTS namespaces)")
        for tool in ("ip", "nsenter", "unshare", "mount"):
            if shutil.which(tool) is None:
                raise TestbedUnavailable(f"needs {tool} (iproute2, util-linux)")
        self.suffix = secrets.token_hex(3)
        self.prefix = f"yrt{self.suffix}"
        self.net = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(250) + 1}"
        self.nodes = list(NAMES[:nodes])
        self.state = Path(f"/run/yrmpi-testbed-{self.suffix}")
        self.sw = f"{self.prefix}-sw"
        self.pids: dict[str, int] = {}
        self._made: list[str] = []
        try:
            self._up()
        except BaseException:
            self.down()
            raise

    # -- building --------------------------------------------------------------------------
    def ns(self, node: str) -> str:
        return f"{self.prefix}-{node[-1]}"

    def addr(self, node: str) -> str:
        return f"{self.net}.{NAMES.index(node) + 1}"

    def _up(self) -> None:
        self.state.mkdir(parents=True)
        (self.state / "hosts").write_text("127.0.0.1 localhost\n" + "".join(
            f"{self.addr(n)} {n}\n" for n in self.nodes))
        try:
            _ip("netns", "add", self.sw)
        except subprocess.CalledProcessError as exc:
            raise TestbedUnavailable(f"ip netns add failed: {exc.stderr.strip()}") from exc
        self._made.append(self.sw)
        _ip("-n", self.sw, "link", "set", "lo", "up")
        _ip("-n", self.sw, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.sw, "link", "set", "br0", "up")
        shared = sorted({str(p) for p in (ROOT, Path(sys.prefix)) if str(p).startswith("/tmp/")})
        for i, node in enumerate(self.nodes):
            ns = self.ns(node)
            _ip("netns", "add", ns)
            self._made.append(ns)
            _ip("-n", self.sw, "link", "add", f"p{i}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("-n", self.sw, "link", "set", f"p{i}", "master", "br0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{self.addr(node)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            subprocess.Popen(
                ["setsid", "unshare", "--uts", "--mount", "--propagation", "private", "nsenter",
                 f"--net=/run/netns/{ns}", sys.executable, str(HERE / "node_init.py"), node, str(self.state),
                 *shared],
                stdin=subprocess.DEVNULL, stdout=(self.state / f"{node}.log").open("w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        for node in self.nodes:
            pid_file = self.state / f"{node}.pid"
            while not pid_file.exists():
                if time.monotonic() > deadline:
                    raise TestbedUnavailable(f"node {node} did not start: {(self.state / f'{node}.log').read_text()}")
                time.sleep(0.05)
            self.pids[node] = int(pid_file.read_text())

    # -- using -----------------------------------------------------------------------------
    def hosts(self, slots: int | list[int]) -> str:
        """`nodea:4,nodeb:4` for --host (a list gives each node its own count)."""
        counts = slots if isinstance(slots, list) else [slots] * len(self.nodes)
        return ",".join(f"{n}:{c}" for n, c in zip(self.nodes, counts))

    def env(self, **extra: str) -> dict[str, str]:
        """A login environment on a node, plus what a multi-node Open MPI launch needs here."""
        env = {"HOME": "/root", "USER": "root", "LOGNAME": "root", "LANG": "C.UTF-8",
               "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "PRTE_MCA_plm_ssh_agent": str(HERE / "agent.sh"), "YRMN_STATE": str(self.state),
               "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
               "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1",
               "YRMPI_RESULT_DIR": str(self.state),  # shared by every node (/run is not private)
               "YRMPI_LIVENESS_S": "60"}  # 2 cores for every node: see tests/conftest.py job_env
        env.update(extra)
        return env

    def popen(self, cmd: list[str], on: str | None = None, env: dict[str, str] | None = None,
              **kwargs) -> subprocess.Popen:
        """Start `cmd` inside a node (default: the first, the "login node"), in the checkout."""
        pid = self.pids[on or self.nodes[0]]
        full = ["nsenter", "-t", str(pid), "-n", "-u", "-m", f"--wd={ROOT}", "--", "env", "-i",
                *(f"{k}={v}" for k, v in (env or self.env()).items()), *cmd]
        kwargs.setdefault("stdout", subprocess.PIPE)
        return subprocess.Popen(full, stderr=subprocess.STDOUT, text=True, **kwargs)

    def run(self, cmd: list[str], timeout: float = 120, **kwargs) -> tuple[int | None, str]:
        """(exit code, output) of `cmd` in a node; None and what it printed if it hung."""
        proc = self.popen(cmd, **kwargs)
        try:
            out, _ = proc.communicate(timeout=timeout)
            return proc.returncode, out
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            self.kill_jobs()
            return None, out

    def node_pids(self, node: str) -> list[int]:
        out = _ip("netns", "pids", self.ns(node), check=False).stdout
        return [int(p) for p in out.split()]

    def kill_node(self, node: str) -> None:
        """SIGKILL every process of the node, its holder too: the node is gone."""
        for pid in self.node_pids(node):
            _kill(pid)

    def kill_jobs(self) -> None:
        """SIGKILL every process in the nodes but their holders (mpiexec, prted, ranks left over)."""
        for node in self.nodes:
            for pid in self.node_pids(node):
                if pid != self.pids.get(node):
                    _kill(pid)

    def cut(self, node: str) -> None:
        """The node's link down, at the switch: nothing more reaches or leaves it."""
        _ip("-n", self.sw, "link", "set", f"p{self.nodes.index(node)}", "down")

    def down(self) -> None:
        """Kill every process in the nodes, delete the namespaces and the state; idempotent."""
        for ns in self._made:
            for _ in range(3):
                pids = _ip("netns", "pids", ns, check=False).stdout.split()
                if not pids:
                    break
                for pid in pids:
                    _kill(int(pid))
                time.sleep(0.1)
        for ns in reversed(self._made):
            _ip("netns", "del", ns, check=False)
        self._made.clear()
        shutil.rmtree(self.state, ignore_errors=True)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
