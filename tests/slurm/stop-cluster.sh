#!/usr/bin/env bash
# Stop the test cluster that start-cluster.sh started in a state directory: cancel its jobs, stop exactly
# the daemons whose PID files it recorded (slurmds and slurmctld first, MariaDB last), wait for each to
# exit, kill any job process of this cluster that outlived its slurmd, delete the two-node mode's network
# namespaces and bridge. Never touches a process that this cluster did not start.
#
# Usage: stop-cluster.sh [--state DIR] [--purge]
#   --state DIR  state directory (default $VPR_SLURM_STATE or /tmp/vpr-slurm)
#   --purge      also delete the state directory (configuration, logs, accounting database)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$here/common.sh"

STATE=${VPR_SLURM_STATE:-$VPR_SLURM_DEFAULT_STATE}
PURGE=0
while (($#)); do
    case $1 in
        --state) STATE=$2; shift 2 ;;
        --purge) PURGE=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done
[[ -d $STATE ]] || { log "no state directory $STATE: nothing to stop"; exit 0; }
STATE=$(cd "$STATE" && pwd)
((EUID == 0)) || die "must run as root"
take_lock
export SLURM_CONF=$STATE/etc/slurm.conf

# Cancel the jobs first so their steps end through slurmstepd (KillWait=5) rather than being orphaned
# when slurmd goes away.
if alive slurmctld; then
    mapfile -t jobs < <(squeue -h -o %i 2>/dev/null)
    if ((${#jobs[@]})); then scancel --full --quiet "${jobs[@]}" 2>/dev/null || true; fi
    for ((i = 0; i < 100; i++)); do
        [[ -z $(squeue -h -t PD,CF,R,CG,S -o %i 2>/dev/null) ]] && break
        sleep 0.2
    done
fi

# In dependency order, each group stopped in parallel (each daemon takes 1-3 s to exit): nodes and
# controller (they talk to slurmdbd through munge until the end), then slurmdbd and munged, then MariaDB
# (slurmdbd may still write job records into it).
# shellcheck disable=SC2046
stop_daemons $(recorded_slurmds) slurmctld
stop_daemons slurmdbd munged
stop_daemons mariadbd

# A slurmstepd (or a job's own process) started by one of our slurmds carries our SLURM_CONF in its
# environment; one that survived its slurmd would keep running forever. Never ourselves or our callers.
ancestors=" $$ "
p=$$
while ((p > 1)); do
    stat=$(cat "/proc/$p/stat" 2>/dev/null) || break
    stat=${stat##*) }        # the command name may contain spaces; the parent PID follows the state
    read -r _ p _ <<<"$stat"
    ancestors+="$p "
done
strays=()
for environ in /proc/[0-9]*/environ; do
    pid=${environ#/proc/}
    pid=${pid%/environ}
    [[ $ancestors == *" $pid "* ]] && continue
    env=$(tr '\0' '\n' 2>/dev/null <"$environ") || continue
    grep -qxF "SLURM_CONF=$SLURM_CONF" <<<"$env" || continue
    if [[ $(cat "/proc/$pid/comm" 2>/dev/null) == slurmstepd ]] || grep -q '^SLURM_JOB_ID=' <<<"$env"; then
        strays+=("$pid")
    fi
done
if ((${#strays[@]})); then
    log "killing leftover job processes: ${strays[*]}"
    kill -KILL "${strays[@]}" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        left=0
        for pid in "${strays[@]}"; do [[ -d /proc/$pid ]] && left=1; done
        ((left)) || break
        sleep 0.1
    done
fi

# Two-node mode: the namespaces and the bridge start-cluster.sh recorded.
if [[ -f $STATE/netns ]]; then
    while read -r kind name; do
        case $kind in
            netns) ip netns del "$name" 2>/dev/null || true ;;   # also deletes its veth pair
            bridge) ip link del "$name" 2>/dev/null || true ;;
        esac
    done < <(tac "$STATE/netns")
    rm -f "$STATE/netns"
fi

# The /etc/slurm/slurm.conf link of --system-conf, if it still points to our configuration.
if [[ -f $STATE/system-conf ]]; then
    link=$(<"$STATE/system-conf")
    if [[ -L $link && $(readlink "$link") == "$SLURM_CONF" ]]; then rm -f "$link"; fi
    rm -f "$STATE/system-conf"
fi

# env describes a running cluster; without it nobody sources a stale SLURM_CONF (in two-node mode its
# controller address 10.200.0.1 would now follow the default route).
rm -f "$STATE/env"

if ((PURGE)); then
    rm -rf "$STATE"
    log "stopped and removed $STATE"
else
    log "stopped (state kept in $STATE)"
fi
