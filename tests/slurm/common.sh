# shellcheck shell=bash
# Shared by start-cluster.sh and stop-cluster.sh (sourced, not run): the state-directory layout and the
# helpers that find, check and stop the daemons a start recorded there.
#
# Layout of the state directory (default /tmp/vpr-slurm, or $VPR_SLURM_STATE, or --state DIR):
#   env                  shell lines a caller sources/parses: SLURM_CONF=..., partition, node names
#   etc/                 slurm.conf, slurmdbd.conf, gres.conf; hosts (two-node mode: node names, bind-
#                        mounted over /etc/hosts in the slurmds' own mount namespaces)
#   dev/nvidia<i>        fake GPUs: character devices (copies of /dev/null)
#   run/<daemon>.pid     PID of every daemon started for this directory (what stop-cluster.sh stops)
#   log/                 slurmctld, slurmd-<node>, slurmdbd logs and each daemon's stdout/stderr
#   munge/               munged's socket, its own pid file and PRNG seed (owned by the munge user)
#   mysql/               the private MariaDB: datadir, socket, error log (owned by the mysql user)
#   ctld/, spool/<node>/ slurmctld state (and its and slurmdbd's own pid files), slurmd spool directories
#   netns                two-node mode only: the network namespaces and bridge to delete on stop
#   system-conf          with --system-conf: the /etc/slurm/slurm.conf link to delete on stop

# shellcheck disable=SC2034  # used by the scripts that source this file
VPR_SLURM_DEFAULT_STATE=/tmp/vpr-slurm

log() { printf 'vpr-slurm: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The command name a daemon's PID must carry (pid files of two-node slurmds are named slurmd-<node>).
expected_comm() {
    case $1 in
        slurmd-*) echo slurmd ;;
        *) echo "$1" ;;
    esac
}

# alive NAME: true when run/NAME.pid names a live (not zombie) process running the expected program, so a
# recycled PID or a daemon that crashed during start-up is never mistaken for ours.
alive() {
    local pidfile="$STATE/run/$1.pid" pid stat
    [[ -s $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$(expected_comm "$1")" ]] || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

# Names of the recorded slurmds (run/slurmd-<node>.pid).
recorded_slurmds() {
    local f
    for f in "$STATE"/run/slurmd-*.pid; do
        [[ -e $f ]] && basename "$f" .pid
    done
    return 0
}

# stop_daemons NAME...: SIGTERM the recorded PIDs together, wait until every process is gone, SIGKILL
# what is left after 15 s. Waits for /proc/PID to vanish rather than for alive() to fail: a multi-threaded
# daemon's main thread turns zombie before its other threads have ended.
stop_daemons() {
    local name pid pids=() i
    for name in "$@"; do
        if alive "$name"; then
            pid=$(<"$STATE/run/$name.pid")
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
    done
    for ((i = 0; i < 150; i++)); do
        gone=1
        for pid in "${pids[@]}"; do [[ -d /proc/$pid ]] && gone=0; done
        ((gone)) && break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do
        if [[ -d /proc/$pid ]]; then
            log "pid $pid ($(cat "/proc/$pid/comm" 2>/dev/null)) still there 15 s after SIGTERM: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    for name in "$@"; do rm -f "$STATE/run/$name.pid"; done
}

# Holds $STATE/lock on fd 9 for the rest of the calling script, so a start and a stop never interleave.
# Every daemon is started with fd 9 closed, else it would keep the lock forever.
take_lock() {
    mkdir -p "$STATE"
    exec 9>"$STATE/lock"
    flock -w 120 9 || die "another start/stop on $STATE is still running after 120 s"
}
