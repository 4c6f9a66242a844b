"""The bash blocks of the batch scripts, word for word.

The same run-time blocks go into every generated script and into slurm/sweep.sbatch and
slurm/job.sbatch (tests/test_slurm.py checks the templates contain them verbatim). Everything
Slurm-specific that happens at run time lives here, so a user can read and edit it.
"""

from __future__ import annotations

__all__ = ["CAPACITY_BLOCK", "DETECT_BLOCK", "RUN_BLOCK"]

#: Per-rank capacity from the allocation: yrmpi's Config reads YRMPI_CPU_PER_RANK (millicores)
#: and YRMPI_MEMORY_PER_RANK (MB) on rank 0; values already in the environment win.
CAPACITY_BLOCK = r"""# -- per-rank capacity from the allocation (values set before sbatch win) --------------------
cpus_per_rank=${SLURM_CPUS_PER_TASK:-1}
export YRMPI_CPU_PER_RANK=${YRMPI_CPU_PER_RANK:-$((cpus_per_rank * 1000))}
if [[ -z ${YRMPI_MEMORY_PER_RANK:-} && -n ${SLURM_MEM_PER_CPU:-} ]]; then
    export YRMPI_MEMORY_PER_RANK=$((SLURM_MEM_PER_CPU * cpus_per_rank))
elif [[ -z ${YRMPI_MEMORY_PER_RANK:-} && -n ${SLURM_MEM_PER_NODE:-} ]]; then
    # --mem is per node: split it over the most ranks any node runs ("2(x3),1" -> 2).
    most=$(tr ',' '\n' <<<"${SLURM_TASKS_PER_NODE:-1}" | sed 's/(.*//' | sort -n | tail -n1)
    ranks_per_node=${SLURM_NTASKS_PER_NODE:-$most}
    export YRMPI_MEMORY_PER_RANK=$((SLURM_MEM_PER_NODE / ranks_per_node))
fi
export PYTHONUNBUFFERED=1  # rank output reaches the Slurm log as it happens
# The Open MPI wheel's PMIx otherwise tries its munge plugin and prints a help-file error.
export PMIX_MCA_psec=${PMIX_MCA_psec:-native}
if [[ $(id -u) -eq 0 ]]; then  # Open MPI refuses to run as root without these (containers)
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
"""

#: Start the ranks in the background, pass SIGUSR1 (Slurm's B: warning, or scancel --batch/--full)
#: on to the launcher, which hands it to every rank (rank 0 acts, host ranks ignore it), wait for
#: the real exit code, and requeue on EXIT_INTERRUPTED. On SIGTERM (scancel, the time limit) the
#: shell stays until the launcher has ended the ranks: where Slurm tracks processes by parentage
#: (proctrack/linuxproc) ranks orphaned by an early exit of this shell would outlive the job.
#: `launch` is a bash array set above.
RUN_BLOCK = r"""# -- run: pass SIGUSR1 on; requeue on "interrupted" (75) or "lost" (69), never on bad input -------
say() { printf '[%s slurm job %s] %s\n' "$(date '+%F %T')" "${SLURM_JOB_ID:-?}" "$*"; }
restarts=${SLURM_RESTART_COUNT:-0}
say "run $((restarts + 1)) of this job (SLURM_RESTART_COUNT=$restarts), ${SLURM_NTASKS:-?} ranks: ${launch[*]}"
run_id="$SLURM_JOB_ID.$restarts"  # marks the launcher and every rank (their environment), for strays below
# Open MPI keys its session directory and shared-memory files on mpiexec's pid: a killed job's
# leftovers make a later mpiexec given the same pid fail to start or hang. A one-node run gets
# its own (they would not exist on the other nodes of a larger allocation).
private="" shm=""
if ((${SLURM_JOB_NUM_NODES:-1} == 1)); then
    private=$(mktemp -d "${TMPDIR:-/tmp}/yrmpi-launch-$$-XXXXXX")
    shm=$(mktemp -d "/dev/shm/yrmpi-launch-$$-XXXXXX" 2>/dev/null || echo "$private")
    export PRTE_MCA_prte_tmpdir_base=${PRTE_MCA_prte_tmpdir_base:-$private}
    export OMPI_MCA_btl_sm_backing_directory=${OMPI_MCA_btl_sm_backing_directory:-$shm}
    export OMPI_MCA_btl=${OMPI_MCA_btl:-self,sm}  # shared memory only: no rank listens on a TCP port
fi
# The driver's completion record (yrmpi/launch/completion.py): rank 0 writes the driver's exit
# code there when it finishes. mpiexec's own code cannot tell a finished job from a lost one (a
# node that dies makes PRRTE end the job with 0 about half the time); the record can.
if ((${SLURM_JOB_NUM_NODES:-1} > 1)); then result_dir=${YRMPI_RESULT_DIR:-$PWD}; else result_dir=${TMPDIR:-/tmp}; fi
export YRMPI_DRIVER_RESULT="$result_dir/.yrmpi-driver-$run_id.result"
rm -f "$YRMPI_DRIVER_RESULT"
if ((${SLURM_JOB_NUM_NODES:-1} > 1)) && [[ ${launch[0]} != srun ]] &&
    "${launch[0]}" --version 2>/dev/null | grep -qiE "open mpi|prte"; then
    # Open MPI passes only OMPI_*/PMIX_* to other nodes: the job's own variables go with -x.
    forward=()
    for name in $(compgen -e | grep -E '^(YRMPI_|MALLOC_|PYTHONPATH$|PYTHONUNBUFFERED$)'); do
        forward+=(-x "$name")
    done
    launch=("${launch[0]}" "${forward[@]}" "${launch[@]:1}")
fi
YRMPI_SLURM_RUN=$run_id "${launch[@]}" &
child=$!
forward_usr1() {
    say "SIGUSR1 (time limit near, or scancel --signal=USR1): passing it to the ranks"
    kill -USR1 "$child" 2>/dev/null || true
}
ending=""
end_ranks() {
    ending=1
    say "SIGTERM (scancel, scontrol requeue, or the time limit): ending the ranks; this script will not requeue"
    kill -TERM "$child" 2>/dev/null || true
}
trap forward_usr1 USR1
trap end_ranks TERM
while kill -0 "$child" 2>/dev/null; do
    wait "$child"  # returns early when a trapped signal arrives; then wait again
done
wait "$child"
rc=$?
trap - USR1 TERM
if [[ -n $ending ]]; then
    # Open MPI's mpiexec exits on SIGTERM without waiting for its ranks, and a sweep's host ranks
    # ignore SIGTERM (rank 0 ends them): give the ranks of this run 5 s, then SIGKILL them.
    strays() { grep -lsxz "YRMPI_SLURM_RUN=$run_id" /proc/[0-9]*/environ | cut -d/ -f3; }
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        left=$(strays | xargs)
        [[ -z $left ]] && break
        sleep 0.5
    done
    if [[ -n $left ]]; then
        say "ranks still running 5 s after SIGTERM: SIGKILL to $left"
        kill -KILL $left 2>/dev/null || true
    fi
fi
if [[ -f $YRMPI_DRIVER_RESULT ]]; then
    recorded=$(<"$YRMPI_DRIVER_RESULT")
    [[ $recorded =~ ^[0-9]+$ ]] && rc=$recorded  # the driver's own code, whatever mpiexec said
elif [[ -z $ending ]]; then
    say "the job was lost before the driver finished: the launcher exited with $rc and rank 0 recorded" \
        "no result (a node or rank 0 died, or MPI ended the job); exit code 69"
    rc=69
fi
rm -f "$YRMPI_DRIVER_RESULT"
# Exit codes (docs/sweeps.md): 0 done, 2 bad input, 3 experiments failed, 73 output unusable: the
# same again would end the same way. 75 stopped with work left: requeue. 69 the job was lost (a
# node, rank 0, MPI): a sweep resumes from its journal, so requeue it; a plain job only with
# YRMPI_REQUEUE_LOST=1 (it may not be able to resume, and a rank it kills would loop).
resumable=${YRMPI_REQUEUE_LOST:-0}
[[ " ${launch[*]} " == *" -m yrmpi sweep "* ]] && resumable=${YRMPI_REQUEUE_LOST:-1}
case $rc in
75) why="interrupted" ;;
69) why=$( ((resumable == 1)) && echo "the job was lost") ;;
*) why="" ;;
esac
if [[ -n $why && -z $ending ]]; then
    if ((restarts >= ${YRMPI_MAX_REQUEUES:-10})); then
        say "exit code $rc ($why), but the job was requeued $restarts times (YRMPI_MAX_REQUEUES)" \
            "already; not requeueing. Submit the script again to resume"
    else
        say "exit code $rc ($why): requeueing; the next run resumes where this one stopped"
        scontrol requeue "$SLURM_JOB_ID" || say "scontrol requeue failed; submit the script again to resume"
    fi
else
    say "ranks ended with exit code $rc"
fi
rm -rf "$private" "$shm"
exit "$rc"
"""

#: Run-time choice of the launcher line for the MPI that mpi4py loads (used by the templates;
#: generated scripts contain the concrete line instead).
DETECT_BLOCK = r"""# -- launcher: the MPI that mpi4py loads decides the line ---------------------------------------
python=$(command -v python)
probe='import mpi4py; mpi4py.rc.initialize = False  # only ask which library, do not start MPI
from mpi4py import MPI; print(MPI.Get_library_version().strip(chr(0)))'
mpi_library=$("$python" -c "$probe" 2>&1) || { echo "cannot import mpi4py with $python: $mpi_library" >&2; exit 1; }
case $mpi_library in
*"Open MPI"*) mpi=openmpi ;;
*MPICH* | *"Intel(R) MPI"* | *MVAPICH*) mpi=mpich ;;
*) mpi=unknown ;;
esac
mpiexec=$(dirname "$python")/mpiexec  # the MPI library's own mpiexec (venv wheels put it here)
[[ -x $mpiexec ]] || mpiexec=$(command -v mpiexec || echo mpiexec)
case ${YRMPI_LAUNCHER:-mpiexec}/$mpi in
mpiexec/openmpi)
    # Same flags as `yrmpi run` (yrmpi/launch/mpiexec.py): no binding (a rank's instances are threads; idle
    # ranks back off), declared CPUs may exceed cores; YRMPI_FT: 1 (default) ULFM, so a rank killed
    # by a signal is reported to the others instead of ending the job; heartbeat adds Open MPI's
    # heartbeat detector; 0 turns fault tolerance off (docs/faults.md).
    launch=("$mpiexec" -n "$SLURM_NTASKS" --oversubscribe --bind-to none)
    case ${YRMPI_FT:-1} in
    0) ;;
    heartbeat) launch+=(--with-ft ulfm --mca mpi_ft_detector true --mca mpi_ft_detector_thread true) ;;
    *) launch+=(--with-ft ulfm) ;;
    esac
    ;;
mpiexec/*) launch=("$mpiexec" -n "$SLURM_NTASKS") ;;
srun/openmpi) launch=(srun --mpi=pmix) ;;
srun/mpich) launch=(srun --mpi=pmi2) ;;
srun/*) launch=(srun) ;;
*) echo "YRMPI_LAUNCHER must be mpiexec or srun, got '${YRMPI_LAUNCHER}'" >&2; exit 2 ;;
esac
if [[ ${launch[0]} == srun && -n ${SLURM_CPUS_PER_TASK:-} ]]; then
    launch+=("--cpus-per-task=$SLURM_CPUS_PER_TASK")  # srun 22.05-23.02 does not inherit it
fi
"""

