"""Time limits: Slurm's --time values, and the warning lead a sweep's job needs before its limit."""

from __future__ import annotations

import math
import re

from .errors import SlurmError

__all__ = ["DEFAULT_TIME", "SIGNAL_LEAD_S", "WARNING_SLACK_S", "parse_time", "signal_lead"]

DEFAULT_TIME = "2:00:00"
SIGNAL_LEAD_S = 120  # seconds before the time limit that Slurm sends SIGUSR1 to the batch script
WARNING_SLACK_S = 120  # extra time a job needs beyond the lead: Slurm may send the warning a minute early

_TIME_FORMATS = (
    (re.compile(r"^(\d+)$"), ("m",)),
    (re.compile(r"^(\d+):(\d+)$"), ("m", "s")),
    (re.compile(r"^(\d+):(\d+):(\d+)$"), ("h", "m", "s")),
    (re.compile(r"^(\d+)-(\d+)$"), ("d", "h")),
    (re.compile(r"^(\d+)-(\d+):(\d+)$"), ("d", "h", "m")),
    (re.compile(r"^(\d+)-(\d+):(\d+):(\d+)$"), ("d", "h", "m", "s")),
)
_UNIT_S = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_time(text: str) -> int:
    """Seconds in a Slurm --time value (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS)."""
    for pattern, units in _TIME_FORMATS:
        match = pattern.match(text.strip())
        if match:
            seconds = sum(int(v) * _UNIT_S[u] for v, u in zip(match.groups(), units))
            if seconds <= 0:
                break
            return seconds
    raise SlurmError(f"--time: found {text!r}, expected a Slurm time limit such as 30, 2:00:00 or 1-12:00:00")


def signal_lead(time_text: str, grace_period: float) -> int:
    """Seconds before the limit `time_text` at which Slurm should warn a sweep (--signal=B:USR1@lead).

    The warning must leave the sweep its grace period plus time to journal and requeue. Slurm
    checks time limits once a minute and may warn up to 60 s early: a job shorter than lead + 2
    minutes could be warned while its ranks are still starting (and die of it).
    """
    limit = parse_time(time_text)
    lead = max(SIGNAL_LEAD_S, math.ceil(grace_period) + 60)
    if limit < lead + WARNING_SLACK_S:
        raise SlurmError(f"--time {time_text} ({limit} s) leaves no room for the {lead} s warning (grace_period "
                         f"{grace_period:g} s + 60 s, at least {SIGNAL_LEAD_S} s) plus {WARNING_SLACK_S} "
                         f"s, as Slurm may warn up to a minute early; ask for at least {lead + WARNING_SLACK_S} s")
    return lead
