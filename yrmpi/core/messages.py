"""Every message the ranks exchange: one named type each, with its fields.

A message travels as a plain tuple `(code, *fields)` (cheap to pickle and to load; a named
tuple would be rebuilt through Python code on every receive). The receiving rank calls the
handler registered for the code with the fields as arguments, in order; a test checks that
every message has exactly one handler and that its parameters are named like the fields, so
the two cannot drift apart. `docs/architecture.md` has the table of who sends what to whom.
"""

from __future__ import annotations

from typing import Any, NamedTuple

# -- creation and lifecycle (creator <-> scheduler on rank 0) ----------------------------------


class CreateSpec(NamedTuple):
    """What the scheduler needs to place and manage one instance."""

    cls: str  # label for messages
    cpu: int
    memory: int
    custom: dict
    name: str | None
    namespace: str
    get_if_exists: bool
    detached: bool
    policy: str  # "pack" or "spread"
    timeout_ms: int  # schedule_timeout_ms; -1 forever
    oneshot: bool  # a stateless call's instance
    recover: int  # recover_retry_times
    methods: dict  # name -> return count, for lookups of named instances
    affinity: tuple = ()  # InvokeOptions.schedule_affinities in wire form (core/affinity.py)
    labels: tuple = ()  # InvokeOptions.labels: what INSTANCE affinities of others match
    rg: tuple = ()  # InvokeOptions.resource_group_options: (resource group name, bundle index or -1)


class Create(NamedTuple):
    """creator -> scheduler: place a new instance."""

    iid: int
    creator: int
    owner: int | None
    spec: CreateSpec


class Placed(NamedTuple):
    """scheduler -> creator: the instance lives on `rank` (`actual_iid`: an existing named one)."""

    iid: int
    rank: int
    actual_iid: int


class CreateFailed(NamedTuple):
    """scheduler -> creator: no room, a bad request, a deadlock (`kind`), an ended owner."""

    iid: int
    code: int
    message: str
    kind: str


class InstanceEnded(NamedTuple):
    """scheduler -> creator (or a rank that located it): the instance has ended."""

    iid: int
    code: int
    reason: str


class Kill(NamedTuple):
    """any -> scheduler: end an instance (and its children); `sync` wants a Reply; `restart`:
    it comes back once ended, if it has restarts left (`ray.kill(no_restart=False)`)."""

    iid: int
    reason: str
    graceful: bool
    requester: int
    sync: bool
    restart: bool = False


class Lookup(NamedTuple):
    """any -> scheduler: the instance of a name; Reply with (iid, cls, rank, methods) or None."""

    req_id: int
    requester: int
    name: str
    namespace: str


class Locate(NamedTuple):
    """any -> scheduler: where an instance lives (a handle arrived before its placement)."""

    iid: int
    requester: int


class Resources(NamedTuple):
    """any -> scheduler: capacity and usage; Reply with the usage table."""

    req_id: int
    requester: int


class Moved(NamedTuple):
    """scheduler -> every rank: a recovered instance lives on `rank` now."""

    iid: int
    rank: int


class Gone(NamedTuple):
    """scheduler -> every rank: an instance died with its rank and will not come back."""

    iid: int
    code: int
    reason: str


# -- instances and calls (creator/caller <-> host) ---------------------------------------------


class Construct(NamedTuple):
    """creator -> host: build the instance (`blob`: the pickled class, once per rank and class)."""

    iid: int
    owner: int | None
    creator: int
    cls_key: str
    blob: bytes | None
    init_blob: bytes
    options: dict


class Call(NamedTuple):
    """caller -> host: run a method; the host answers with one Result."""

    call_id: int
    caller: int
    iid: int
    method: str
    args: tuple
    kwargs: dict
    nret: int


class Result(NamedTuple):
    """host -> caller: a call's value (`ok`), or its error info (`errors.error_info`)."""

    call_id: int
    ok: bool
    payload: Any


class Terminate(NamedTuple):
    """creator or scheduler -> host: end an instance (`graceful`: after the calls queued)."""

    iid: int
    reason: str
    graceful: bool


class Ended(NamedTuple):
    """host -> scheduler: an instance ended; `draining` while its calls still run."""

    iid: int
    code: int
    reason: str
    draining: bool


class Drained(NamedTuple):
    """host -> scheduler: the last call of an ended instance returned; its capacity is free."""

    iid: int


class Probe(NamedTuple):
    """scheduler -> host: what runs outside a yrmpi wait (deadlock detection)?"""

    probe_id: int


class ProbeResult(NamedTuple):
    """host -> scheduler: per instance (running outside a wait, waiting, queued)."""

    probe_id: int
    rank: int
    state: dict


# -- objects and handles -------------------------------------------------------------------------


class Fetch(NamedTuple):
    """any -> owner of a ref: send me its value."""

    ref_id: int
    requester: int


class Value(NamedTuple):
    """owner -> fetcher: the value (`ok`) or error info."""

    ref_id: int
    ok: bool
    payload: Any


class Ref(NamedTuple):
    """holder -> owner of a handle: +1 when a handle leaves a rank, -n when a rank drops its n."""

    iid: int
    delta: int


# -- the runtime itself --------------------------------------------------------------------------


class Reply(NamedTuple):
    """the answer to a request (`Rank.request`), matched by `key`."""

    key: int
    payload: Any


class RanksFailed(NamedTuple):
    """wire -> its own rank (never sent): MPI reported these ranks dead (ULFM)."""

    ranks: list


class Shutdown(NamedTuple):
    """driver -> host: the job is over; end your instances and say Bye."""


class Bye(NamedTuple):
    """host -> driver: every instance here has ended."""

    rank: int


# -- communicator groups (members <-> the group registry on rank 0) -----------------------------


class GroupJoin(NamedTuple):
    """member -> registry: this instance enters the group's next epoch."""

    gid: tuple
    iid: int
    rank: int
    prev_epoch: int


class GroupGo(NamedTuple):
    """registry -> members: carve epoch `epoch` over `view` (iid, rank pairs) with `tag`."""

    gid: tuple
    epoch: int
    version: int
    tag: int
    view: list


class GroupGrow(NamedTuple):
    """owner's rank -> the ranks of the existing siblings: one more was created, the group must
    grow before their next call (the registry's own notice could arrive after that call)."""

    gid: tuple


class GroupActive(NamedTuple):
    """registry -> members: the group's membership is stable (no pending change)."""

    gid: tuple


class GroupFail(NamedTuple):
    """registry -> a member: its join cannot succeed (`kind`: why)."""

    gid: tuple
    iid: int
    message: str
    kind: str


class GroupChanged(NamedTuple):
    """registry -> members: the membership changed (`hard`: the running epoch is torn down;
    `force`: every live epoch, whatever its version)."""

    gid: tuple
    version: int
    hard: bool
    reason: str
    kind: str
    force: bool


class GroupQuery(NamedTuple):
    """member -> registry: this instance's position in the group; Reply."""

    key: int
    requester: int
    gid: tuple
    iid: int


class GroupCreate(NamedTuple):
    """owner -> registry: a named group of these instances; Reply."""

    key: int
    requester: int
    owner: int | None
    name: str
    iids: list


class GroupDestroy(NamedTuple):
    """owner -> registry: drop a named group; Reply."""

    key: int
    requester: int
    owner: int | None
    name: str


class GroupReset(NamedTuple):
    """member -> registry: a collective failed locally; tear the epoch down for everyone."""

    gid: tuple
    epoch: int | None
    reason: str
    kind: str


class CollStall(NamedTuple):
    """member -> registry: a collective waits long; compare the members' call signatures."""

    gid: tuple
    epoch: int


class CollProbe(NamedTuple):
    """registry -> members: send me your recent call signatures."""

    gid: tuple
    epoch: int
    probe: int


class CollHistory(NamedTuple):
    """member -> registry: the call signatures a probe asked for."""

    gid: tuple
    epoch: int
    probe: int
    rank: int
    found: dict


class GroupMemberFailed(NamedTuple):
    """a member's rank -> registry: a call of member `iid` raised `error_class`: `message`; its
    groups (but those in `keep`, where it opted out) fail fast: their members are released."""

    iid: int
    rank: int
    error_class: str
    message: str
    keep: list


# -- the yr API's job-wide services on rank 0: named-instance listing, the KV store ------------


class ListNames(NamedTuple):
    """any -> scheduler: the live named instances; Reply with [(namespace, name), ...]
    (the default namespace only, unless `all_namespaces`)."""

    req_id: int
    requester: int
    all_namespaces: bool


class KvWrite(NamedTuple):
    """any -> KV store (rank 0): set `keys` to `values` (bytes; large ones travel out of band as
    uint8 arrays); `nx`: only if none exists (all or nothing); `ttl`: seconds, 0 forever. Reply
    with None, or an error message."""

    req_id: int
    requester: int
    keys: list
    values: list
    nx: bool
    ttl: float


class KvRead(NamedTuple):
    """any -> KV store: the values of `keys`, once they all exist (`timeout` seconds, -1
    forever; `partial`: missing ones as None at the timeout). Reply with the list of values,
    or an error message (str) at the timeout."""

    req_id: int
    requester: int
    keys: list
    timeout: float
    partial: bool


class KvDel(NamedTuple):
    """any -> KV store: delete `keys` (missing ones are ignored). Reply with None."""

    req_id: int
    requester: int
    keys: list


class GroupShrink(NamedTuple):
    """registry -> every live rank: ranks died; every rank shrinks the communicator that groups
    are carved from (ULFM `MPI_Comm_shrink`, collective over all live ranks), and the epochs
    handed out after this carve from shrink number `generation`."""

    generation: int


class RgCreate(NamedTuple):
    """any -> scheduler: reserve a resource group, `bundles` ([(cpu, memory, custom), ...]) placed
    by `strategy` (PACK, SPREAD, STRICT_PACK, STRICT_SPREAD). Reply with None, or why not (str)."""

    req_id: int
    requester: int
    name: str
    bundles: list
    strategy: str


class RgRemove(NamedTuple):
    """any -> scheduler: end a resource group's instances and free its reservation. Reply with None."""

    req_id: int
    requester: int
    name: str


#: Every message type, in code order: a message's code is its index here.
TYPES: tuple[type, ...] = (
    Create, Placed, CreateFailed, InstanceEnded, Kill, Lookup, Locate, Resources, Moved, Gone,
    Construct, Call, Result, Terminate, Ended, Drained, Probe, ProbeResult,
    Fetch, Value, Ref, Reply, RanksFailed, Shutdown, Bye,
    GroupJoin, GroupGo, GroupGrow, GroupActive, GroupFail, GroupChanged, GroupQuery, GroupCreate,
    GroupDestroy, GroupReset, CollStall, CollProbe, CollHistory, GroupMemberFailed,
    ListNames, KvWrite, KvRead, KvDel,
    GroupShrink, RgCreate, RgRemove,
)
CODES: dict[type, int] = {cls: code for code, cls in enumerate(TYPES)}


CALL, RESULT = CODES[Call], CODES[Result]


def wire_form(msg: tuple) -> tuple:
    """The tuple that travels: the message's code, then its fields. The two messages of every
    call, Call (roles/caller.py) and Result (roles/host.py), are built in this form directly,
    `(CALL, <Call's fields>)` and `(RESULT, <Result's fields>)`, and the wire sends a plain tuple
    as it is: a named tuple costs ~0.4 us to build and ~0.2 us more to convert, a tenth of a
    call's own Python time."""
    return (CODES[type(msg)],) + msg


def name_of(code: int) -> str:
    return TYPES[code].__name__ if 0 <= code < len(TYPES) else f"unknown message {code}"


# -- liveness (scheduling/liveness.py) --------------------------------------------------------------


class Alive(NamedTuple):
    """host -> rank 0, every 2 s while the host holds instances: it is not stopped or cut off."""

    rank: int


class RanksUnresponsive(NamedTuple):
    """rank 0 -> every other live rank: these ranks sent nothing for YRMPI_LIVENESS_S; handle
    them as dead (RanksFailed) and never send to them again."""

    ranks: list


TYPES = (*TYPES, Alive, RanksUnresponsive)
CODES = {cls: code for code, cls in enumerate(TYPES)}
