"""GPUs: what a node says it has, how they are shared out over its host ranks, and binding a
rank to its share (before any user code can touch CUDA).

No CUDA library is loaded here: the node is asked through the variables a GPU node sets
(`CUDA_VISIBLE_DEVICES`, Slurm's `SLURM_STEP_GPUS` / `SLURM_JOB_GPUS` / `SLURM_GPUS_ON_NODE`)
and, when none is set, `nvidia-smi -L`. See docs/torch.md.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence

__all__ = ["assign", "bind", "detect", "share"]

SMI_TIMEOUT_S = 10.0
_NONE = ("", "-1", "none", "nodevfiles")  # what CUDA_VISIBLE_DEVICES / Slurm say for "no GPU"


def _ids(text: str) -> list[str]:
    """GPU ids from a comma-separated list; Slurm may write ranges ("0-2,5") or counts with a
    type ("tesla:2" in SLURM_GPUS_ON_NODE style); ranges are expanded."""
    if text.strip().lower() in _NONE:
        return []
    out: list[str] = []
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)-(\d+)", part)
        if m:
            out.extend(str(i) for i in range(int(m.group(1)), int(m.group(2)) + 1))
        elif part:
            out.append(part)
    return out


def _count(text: str) -> int:
    """SLURM_GPUS_ON_NODE: a count, sometimes typed ("a100:2")."""
    m = re.search(r"(\d+)\s*$", text.strip())
    return int(m.group(1)) if m else 0


def _smi(executable: str) -> list[str]:
    try:
        out = subprocess.run([executable, "-L"], capture_output=True, text=True, timeout=SMI_TIMEOUT_S,
                             check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [m.group(1) for m in re.finditer(r"^GPU (\d+):", out, flags=re.MULTILINE)]


def detect(env: Mapping[str, str] | None = None) -> tuple[list[str], str]:
    """The GPU ids this process may use, and where that came from (for the log).

    In order: CUDA_VISIBLE_DEVICES (exactly those, possibly UUIDs), SLURM_STEP_GPUS,
    SLURM_JOB_GPUS (physical ids), SLURM_GPUS_ON_NODE (a count: ids 0..n-1), `nvidia-smi -L`."""
    env = os.environ if env is None else env
    for name in ("CUDA_VISIBLE_DEVICES", "SLURM_STEP_GPUS", "SLURM_JOB_GPUS"):
        if name in env:
            return _ids(env[name]), name
    if "SLURM_GPUS_ON_NODE" in env:
        return [str(i) for i in range(_count(env["SLURM_GPUS_ON_NODE"]))], "SLURM_GPUS_ON_NODE"
    smi = shutil.which("nvidia-smi", path=env.get("PATH"))
    if smi is None:
        return [], "nothing (no GPU variables, no nvidia-smi)"
    return _smi(smi), "nvidia-smi -L"


def share(seen: Sequence[Sequence[str]]) -> list[list[str]]:
    """Share one node's GPUs out over its host ranks, given what each of them sees (in rank order).

    When they all see the same GPUs (the usual case: one list for the node), the ranks split
    them in contiguous blocks: as many GPUs as ranks gives one each; fewer GPUs than ranks
    gives the first ranks one each and the rest none; more gives some ranks several. When they
    see different GPUs, the launcher has bound each rank already (srun --gpus-per-task):
    each keeps what it sees."""
    if not seen:
        return []
    first = list(seen[0])
    if any(list(s) != first for s in seen[1:]):
        return [list(s) for s in seen]
    n, g = len(seen), len(first)
    if g <= n:
        return [[first[i]] if i < g else [] for i in range(n)]
    return [first[i * g // n:(i + 1) * g // n] for i in range(n)]


def bind(gpus: Sequence[str], env: dict | None = None) -> str | None:
    """Make this process see only `gpus` (CUDA_VISIBLE_DEVICES), before user code runs. A rank of
    a GPU node that got none sees none, so an instance that reserved no GPU cannot take one.
    Returns a warning when CUDA was initialised already (too late: the binding cannot apply)."""
    env = os.environ if env is None else env
    env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    torch = sys.modules.get("torch")
    if torch is not None and getattr(torch.cuda, "is_initialized", lambda: False)():
        return ("CUDA was initialised before yrmpi started on this rank: CUDA_VISIBLE_DEVICES="
                f"{env['CUDA_VISIBLE_DEVICES']!r} cannot apply; touch CUDA only inside instances")
    return None


def assign(seen: Mapping[int, tuple[str, Sequence[str]]]) -> dict[int, list[str]]:
    """Host rank -> its GPU ids, for the ranks of nodes where any rank sees a GPU. `seen` maps
    each host rank to (its node, the GPUs it sees); the driver (rank 0) is not in it."""
    by_node: dict[str, list[int]] = {}
    for rank in sorted(seen):
        by_node.setdefault(seen[rank][0], []).append(rank)
    out: dict[int, list[str]] = {}
    for ranks in by_node.values():
        lists = [list(seen[r][1]) for r in ranks]
        if any(lists):
            out.update(zip(ranks, share(lists)))
    return out
