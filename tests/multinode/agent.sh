#!/bin/sh
# The "ssh" PRRTE runs to start its daemon on another test node: `agent.sh [ssh options] HOST CMD...`.
# Enters HOST's namespaces (its holder's pid is in $YRMN_STATE/HOST.pid) and runs CMD with
# /bin/sh -c from a clean login environment, as sshd would: nothing of the caller's environment
# travels, so the launch must pass what remote ranks need (-x), as on a real cluster.
while [ $# -gt 0 ]; do
    case $1 in
    -o | -p | -l | -i) shift 2 ;;
    -*) shift ;;
    *) break ;;
    esac
done
host=${1#*@}
shift
host=$(printf %s "$host" | tr 'A-Z' 'a-z')   # PRRTE lower-cases host names; the nodes are lower-case
pidfile=${YRMN_STATE:?}/$host.pid
pid=$(cat "$pidfile" 2>/dev/null) || { echo "agent.sh: ssh: connect to host $host: No route to host" >&2; exit 255; }
[ -e "/proc/$pid/ns/uts" ] || { echo "agent.sh: ssh: connect to host $host: No route to host" >&2; exit 255; }
exec nsenter -t "$pid" -n -u -m --wd=/ -- env -i HOME=/root USER=root LOGNAME=root SHELL=/bin/sh \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin /bin/sh -c "$*"
