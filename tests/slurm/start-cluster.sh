#!/usr/bin/env bash
# Start a throw-away Slurm cluster on this machine for the test suite: munged, a private MariaDB,
# slurmdbd (so sacct works), slurmctld and one slurmd named `localhost` with fake GPUs, or two slurmds
# (node1, node2) in their own network namespaces with --nodes 2; partitions debug (the default) and cpu and
# gpu (the names profiles/slurm uses), all over every node. Everything lives in one state directory;
# stop-cluster.sh stops exactly what this started. The settings were measured on Debian 12 with
# slurm-wlm 22.05, run as root without systemd; the reason for each is commented where it is set.
#
# Usage: start-cluster.sh [--state DIR] [--nodes 1|2] [--gpus N] [--cpus N] [--mem MB] [--system-conf]
#                         [--status]
#   --state DIR    state directory (default $VPR_SLURM_STATE or /tmp/vpr-slurm)
#   --nodes N      1 (default, $VPR_SLURM_NODES) or 2 (node1/node2 in network namespaces, 10.200.0.0/24)
#   --gpus N       fake GPUs per node (default 2, $VPR_SLURM_GPUS)
#   --cpus N, --mem MB
#                  CPUs and memory (MB) each node declares, more than the machine has if need be (default:
#                  what `slurmd -C` finds, 95% of its memory; $VPR_SLURM_CPUS, $VPR_SLURM_MEM_MB): lets the
#                  cluster schedule a site profile's real requests (16 CPUs, 128 GB) on a small machine.
#                  slurmd then trusts slurm.conf (SlurmdParameters=config_overrides); task/affinity binds
#                  tasks to the CPUs that exist (a job given only non-existent ones runs on all real CPUs and
#                  slurmd logs "error: job N allocated no CPUs", harmless).
#   --system-conf  also link /etc/slurm/slurm.conf (the compiled-in default) to this cluster's config,
#                  when that path is free; stop-cluster.sh removes the link. Needed by the Snakemake Slurm
#                  plugin: its job-step executor drops every SLURM_* variable but a few job IDs, SLURM_CONF
#                  included, before it calls srun inside the job. Recorded as VPR_SLURM_SYSTEM_CONF in env.
#                  Two-node mode needs no link: its jobs see the cluster's etc/ as /etc/slurm anyway.
#   --status       start nothing: exit 0 when every daemon of DIR runs, 3 when none does, 4 when some do
# Environment: VPR_SLURM_PORT (first of four TCP ports, default 16817), VPR_SLURM_TIMEOUT (seconds to wait
# for the node(s) to become idle, default 60).
# Running it again while the cluster is up only checks it and prints the environment again.
# On success prints the lines of $STATE/env (`export SLURM_CONF=...` etc.) on stdout; progress goes to
# stderr. Every Slurm client command must run with that SLURM_CONF.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$here/common.sh"

STATE=${VPR_SLURM_STATE:-$VPR_SLURM_DEFAULT_STATE}
NODES=${VPR_SLURM_NODES:-1}
GPUS=${VPR_SLURM_GPUS:-2}
DECLARED_CPUS=${VPR_SLURM_CPUS:-}
DECLARED_MEM=${VPR_SLURM_MEM_MB:-}
STATUS_ONLY=0
SYSTEM_CONF=0
while (($#)); do
    case $1 in
        --state) STATE=$2; shift 2 ;;
        --nodes) NODES=$2; shift 2 ;;
        --gpus) GPUS=$2; shift 2 ;;
        --cpus) DECLARED_CPUS=$2; shift 2 ;;
        --mem) DECLARED_MEM=$2; shift 2 ;;
        --system-conf) SYSTEM_CONF=1; shift ;;
        --status) STATUS_ONLY=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done
[[ $NODES == 1 || $NODES == 2 ]] || die "--nodes must be 1 or 2, got '$NODES'"
[[ $GPUS =~ ^[1-9][0-9]?$ ]] || die "--gpus must be a number from 1 to 99, got '$GPUS'"
[[ -z $DECLARED_CPUS || $DECLARED_CPUS =~ ^[1-9][0-9]*$ ]] || die "--cpus must be a positive number"
[[ -z $DECLARED_MEM || $DECLARED_MEM =~ ^[1-9][0-9]*$ ]] || die "--mem must be a positive number (MB)"
if ((STATUS_ONLY)) && [[ ! -d $STATE ]]; then exit 3; fi
mkdir -p "$STATE" 2>/dev/null || die "cannot create state directory $STATE"
STATE=$(cd "$STATE" && pwd)

PORT=${VPR_SLURM_PORT:-16817}
CTLD_PORT=$PORT SLURMD_PORT=$((PORT + 1)) DBD_PORT=$((PORT + 2)) DB_PORT=$((PORT + 3))
TIMEOUT=${VPR_SLURM_TIMEOUT:-60}
CLUSTER=vpr
PARTITION=debug
NET=10.200.0                    # two-node mode: bridge .1 (slurmctld side), node1 .2, node2 .3
BRIDGE=vprslurm0
CONF=$STATE/etc/slurm.conf
MUNGE_SOCKET=$STATE/munge/munge.socket.2
DB_SOCKET=$STATE/mysql/mysqld.sock

if ((NODES == 2)); then NODE_NAMES=(node1 node2); else NODE_NAMES=(localhost); fi

# The nodes of the configuration in the state directory (that of a running cluster).
configured_nodes() {
    [[ -f $CONF ]] && sed -n 's/^NodeName=\([^ ]*\) .*/\1/p' "$CONF"
    return 0
}

if ((STATUS_ONLY)); then
    # Reports on what the state directory is configured for, whatever --nodes says.
    up=0 total=0
    for d in munged mariadbd slurmdbd slurmctld $(configured_nodes | sed 's/^/slurmd-/'); do
        total=$((total + 1))
        if alive "$d"; then up=$((up + 1)); fi
    done
    if ((up == total)); then exit 0; elif ((up == 0)); then exit 3; else exit 4; fi
fi

# The daemons and `slurmd -C` live in sbin, which a root shell started with a minimal PATH (CI runners,
# `env -i`, cron) does not list.
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
((EUID == 0)) || die "must run as root (it installs packages, starts munged/MariaDB as their users, mknod)"
take_lock
t0=$(date +%s%N)

# On failure: the end of every daemon's output, most telling last (the daemons run in the foreground, so
# log/<daemon>.out has everything their log files have plus errors from before a log file was opened),
# then the error again.
print_log_tails() {
    local f
    for f in "$STATE/mysql/mariadb.err" "$STATE"/log/{munged,slurmdbd,slurmctld,slurmd-*}.out; do
        [[ -s $f ]] || continue
        printf '==> %s (last 12 lines) <==\n' "$f" >&2
        tail -n 12 "$f" >&2
    done
}
fail() {
    log "error: $*"
    print_log_tails
    log "daemons that did start are left running for inspection; stop them with:" \
        "$here/stop-cluster.sh --state $STATE"
    log "error: $*"
    exit 1
}

# ---------------------------------------------------------------------------------------------- packages
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        [[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null) == installed ]] || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    command -v apt-get >/dev/null || die "packages missing (${missing[*]}) and apt-get is unavailable"
    log "installing ${missing[*]}"
    # The packages' maintainer scripts would start system-wide munge/mariadb/slurm services on their
    # default ports; a policy-rc.d that answers 101 forbids that (keep one that already exists).
    local policy=/usr/sbin/policy-rc.d own_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        own_policy=1
    fi
    local rc=0 out
    out=$(export DEBIAN_FRONTEND=noninteractive
          apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" 2>&1) || rc=$?
    if ((own_policy)); then rm -f "$policy"; fi
    ((rc == 0)) || die "apt-get install ${missing[*]} failed (exit $rc): $(tail -n 15 <<<"$out")"
}
install_packages

# ------------------------------------------------------------------------------------------- configuration
any_alive() {
    local d
    for d in $(recorded_slurmds) slurmctld slurmdbd mariadbd munged; do alive "$d" && return 0; done
    return 1
}

write_config() {
    local hw cpus boards sockets cores threads mem ctld_host n i addr
    mkdir -p "$STATE"/{etc,dev,run,log,ctld}
    rm -f "$STATE"/run/*.pid "$STATE/env"   # env is rewritten once the cluster is up
    # Fake GPUs: gres.conf rejects regular files and missing File=, a character device is accepted.
    for ((i = 0; i < GPUS; i++)); do
        [[ -c $STATE/dev/nvidia$i ]] || { rm -f "$STATE/dev/nvidia$i"; mknod "$STATE/dev/nvidia$i" c 1 3; }
    done

    # RealMemory above what slurmd -C reports makes the node invalid; 95% of it is safe.
    hw=$(slurmd -C | head -n 1)
    hw_field() { sed -n "s/.*\b$1=\([0-9]*\).*/\1/p" <<<"$hw"; }
    cpus=$(hw_field CPUs) boards=$(hw_field Boards) sockets=$(hw_field SocketsPerBoard)
    cores=$(hw_field CoresPerSocket) threads=$(hw_field ThreadsPerCore) mem=$(hw_field RealMemory)
    [[ -n $cpus && -n $mem ]] || die "cannot parse 'slurmd -C' output: $hw"
    mem=$((mem * 95 / 100))
    # Declared sizes: one socket of single-thread cores; slurmd takes them from here, not from the hardware.
    local overrides=0
    if [[ -n $DECLARED_CPUS ]]; then
        cpus=$DECLARED_CPUS boards=1 sockets=1 cores=$DECLARED_CPUS threads=1 overrides=1
    fi
    if [[ -n $DECLARED_MEM ]]; then mem=$DECLARED_MEM overrides=1; fi

    if ((NODES == 2)); then ctld_host="localhost($NET.1)"; else ctld_host=localhost; fi
    {
        cat <<EOF
# Written by tests/slurm/start-cluster.sh; a throw-away test cluster, rewritten on every fresh start.
ClusterName=$CLUSTER
SlurmctldHost=$ctld_host
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool/%n
SlurmctldPidFile=$STATE/ctld/slurmctld.pid
SlurmdPidFile=$STATE/spool/%n/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd-%n.log
# No cgroups: process tracking through /proc and CPU binding through sched_setaffinity
# (task/none would log "cluster configuration lacks support for cpu binding" for every job).
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default, a job that asks for no memory takes the whole node and jobs serialise.
DefMemPerCPU=1000
SchedulerType=sched/backfill
# Start a batch job when it is submitted: the default batch_sched_delay=3 holds each one back ~3 s.
SchedulerParameters=batch_sched_delay=0
ReturnToService=2
# Finished jobs stay visible to squeue this long; workflow status checks rely on it (SLURM-LOCAL.md).
MinJobAge=300
KillWait=5
MailProg=/bin/true
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
AccountingStorageTRES=gres/gpu
# Keep each job's --comment for sacct (the Snakemake plugin puts the rule name there).
AccountingStoreFlags=job_comment
# Connections to slurmdbd take their munge socket from here, not from AuthInfo.
AccountingStoragePass=$MUNGE_SOCKET
GresTypes=gpu
EOF
        if ((overrides)); then
            echo "# Declared CPUs/memory beyond the machine's: slurmd uses these instead of what it detects."
            echo "SlurmdParameters=config_overrides"
        fi
        for n in "${NODE_NAMES[@]}"; do
            if [[ $n == localhost ]]; then addr=127.0.0.1; else addr=$NET.$((${n#node} + 1)); fi
            echo "NodeName=$n NodeAddr=$addr CPUs=$cpus Boards=$boards SocketsPerBoard=$sockets" \
                 "CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=$mem Gres=gpu:$GPUS State=UNKNOWN"
        done
        echo "PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
        # The partition names profiles/slurm uses, over the same node(s).
        echo "PartitionName=cpu Nodes=ALL MaxTime=INFINITE State=UP"
        echo "PartitionName=gpu Nodes=ALL MaxTime=INFINITE State=UP"
    } >"$CONF"
    for ((i = 0; i < GPUS; i++)); do printf 'Name=gpu File=%s\n' "$STATE/dev/nvidia$i"; done \
        >"$STATE/etc/gres.conf"

    # slurmdbd refuses a configuration readable by others (it holds the database password).
    local pass
    pass=$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')
    (umask 077; cat >"$STATE/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=root
LogFile=$STATE/log/slurmdbd.log
PidFile=$STATE/ctld/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$pass
StorageLoc=slurm_acct_db
EOF
    )
}

if any_alive; then
    configured=$(configured_nodes | wc -l)
    ((configured == NODES)) \
        || die "the cluster in $STATE runs with $configured node(s), not $NODES: run stop-cluster.sh first"
    log "cluster in $STATE is already (partly) running: keeping its configuration"
else
    write_config
fi
export SLURM_CONF=$CONF

# ------------------------------------------------------------------------------------------------ daemons
# launch NAME CMD...: run CMD detached in its own session with a clean environment (only PATH, LANG and
# SLURM_CONF), stdin from /dev/null, output appended to log/NAME.out, fd 9 (our lock) closed, PID in
# run/NAME.pid. A script has no job control, so the background child is not a process-group leader and
# setsid (like env, setpriv, nsenter, unshare) execs in place: $! is the daemon's own PID.
launch() {
    local name=$1
    shift
    if alive "$name"; then
        log "$name already running (pid $(<"$STATE/run/$name.pid"))"
        return 0
    fi
    setsid env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 SLURM_CONF="$CONF" "$@" \
        </dev/null >>"$STATE/log/$name.out" 2>&1 9>&- &
    local pid=$! i
    echo "$pid" >"$STATE/run/$name.pid"
    # Until the exec chain (setsid, env, setpriv/ip/unshare) reaches the daemon, alive() would say no.
    for ((i = 0; i < 100; i++)); do
        [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$(expected_comm "$name")" ]] && return 0
        [[ -d /proc/$pid ]] || break
        sleep 0.02
    done
    alive "$name" || fail "$name did not start"
}

# wait_for NAME WHAT CMD...: poll CMD every 0.1 s until it succeeds; fail if daemon NAME dies or on timeout.
wait_for() {
    local name=$1 what=$2 deadline
    shift 2
    deadline=$(($(date +%s) + TIMEOUT))
    until "$@" >/dev/null 2>&1; do
        alive "$name" || fail "$name exited while waiting for $what"
        (($(date +%s) < deadline)) || fail "timed out after ${TIMEOUT}s waiting for $what"
        sleep 0.1
    done
}

# Two-node mode: one network namespace per slurmd, joined by veth pairs to a bridge that carries $NET.1
# in the root namespace (slurmctld, clients) and routes $NET.0/24 to the nodes; the traffic never leaves
# this machine. It must exist before slurmctld starts: until then $NET.x would follow the default route
# off the machine (measured: slurmctld got "Insane message length" answers from outside).
# Recorded in $STATE/netns for stop-cluster.sh.
ipx() {
    local err
    err=$(ip "$@" 2>&1) || die "'ip $*' failed: $err (two-node mode needs network namespaces, veth and" \
        "bridge devices, i.e. root with CAP_NET_ADMIN; stop-cluster.sh --state $STATE removes what was made)"
}
setup_network() {
    local n ns
    printf 'bridge %s\n' "$BRIDGE" >"$STATE/netns"
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        ipx link add "$BRIDGE" type bridge
        ipx addr add "$NET.1/24" dev "$BRIDGE"
        ipx link set "$BRIDGE" up
    fi
    for n in "${NODE_NAMES[@]}"; do
        ns=vpr-$n
        printf 'netns %s\n' "$ns" >>"$STATE/netns"
        # Complete from an earlier start (the host end of its veth pair exists), or made again.
        if [[ -e /run/netns/$ns ]] && ip link show "$ns" >/dev/null 2>&1; then continue; fi
        ip netns del "$ns" 2>/dev/null || true
        ipx netns add "$ns"
        ipx link add "$ns" type veth peer name eth0 netns "$ns"
        ipx link set "$ns" master "$BRIDGE" up
        ipx -n "$ns" addr add "$NET.$((${n#node} + 1))/24" dev eth0
        ipx -n "$ns" link set eth0 up
        ipx -n "$ns" link set lo up
    done
}
if ((NODES == 2)); then setup_network; fi

# munged as the munge user (it refuses to run as root without --force); socket, pid, seed and log in the
# state dir. Debian's package created the key /etc/munge/munge.key.
mkdir -p "$STATE/munge"
chown munge:munge "$STATE/munge"
chmod 755 "$STATE/munge"   # munged insists that everybody may traverse its socket's directory
launch munged setpriv --reuid=munge --regid=munge --init-groups munged -F \
    --socket="$MUNGE_SOCKET" --pid-file="$STATE/munge/munged.pid" \
    --seed-file="$STATE/munge/munged.seed"   # -F: it logs to stderr, i.e. log/munged.out
wait_for munged "the munge socket" test -S "$MUNGE_SOCKET"

# A private MariaDB for slurmdbd: own datadir, loopback only, own port and socket.
mkdir -p "$STATE/mysql"
chown mysql:mysql "$STATE/mysql"
# Small InnoDB files: a 26 MB datadir made in ~2.5 s instead of 114 MB (slurmdbd logs that the sizes are
# below its recommendations; irrelevant for a handful of test jobs).
DB_OPTS=(--datadir="$STATE/mysql/data" --innodb-log-file-size=8M --innodb-buffer-pool-size=16M)
if [[ ! -d $STATE/mysql/data/mysql ]]; then
    rm -rf "$STATE/mysql/data"
    mariadb-install-db --no-defaults --user=mysql --auth-root-authentication-method=socket --skip-test-db \
        "${DB_OPTS[@]}" >"$STATE/log/mariadb-install.out" 2>&1 \
        || fail "mariadb-install-db failed: $(tail -n 5 "$STATE/log/mariadb-install.out")"
fi
launch mariadbd mariadbd --no-defaults --user=mysql "${DB_OPTS[@]}" --bind-address=127.0.0.1 \
    --port="$DB_PORT" --socket="$DB_SOCKET" --pid-file="$STATE/mysql/mariadbd.pid" \
    --log-error="$STATE/mysql/mariadb.err" --skip-name-resolve --skip-log-bin \
    --innodb-buffer-pool-dump-at-shutdown=0 --innodb-buffer-pool-load-at-startup=0
wait_for mariadbd "MariaDB on $DB_SOCKET" mariadb-admin --no-defaults --socket="$DB_SOCKET" ping

if ! alive slurmdbd; then
    # (Re)set the password slurmdbd.conf holds; root logs in through the socket as the OS root user.
    pass=$(sed -n 's/^StoragePass=//p' "$STATE/etc/slurmdbd.conf")
    # (SQL on stdin, so the password never shows in the process list.)
    mariadb --no-defaults --socket="$DB_SOCKET" -u root 2>"$STATE/log/mariadb-setup.out" <<SQL \
        || fail "creating the accounting database failed: $(<"$STATE/log/mariadb-setup.out")"
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$pass';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
SQL
fi

# slurmdbd reads slurmdbd.conf from the directory of $SLURM_CONF (it has no -f option).
launch slurmdbd slurmdbd -D
wait_for slurmdbd "slurmdbd on port $DBD_PORT" timeout 5 sacctmgr -n list cluster
# Register the cluster before slurmctld's first start: that also creates the root account and root's
# association, so sacct and accounting work for root without further sacctmgr calls.
if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >"$STATE/log/sacctmgr.out" 2>&1 \
        || fail "sacctmgr add cluster $CLUSTER failed: $(<"$STATE/log/sacctmgr.out")"
fi

launch slurmctld slurmctld -D
wait_for slurmctld "slurmctld on port $CTLD_PORT" timeout 5 scontrol ping

if ((NODES == 2)); then
    # nsenter, not `ip netns exec`: the latter remounts /sys, which hides /sys/fs/cgroup, and slurmd 22.05
    # initialises its cgroup plugin even with proctrack/linuxproc ("No filesystem mounted on
    # /sys/fs/cgroup ... slurmd initialization failed"). A UTS namespace gives each node its own hostname,
    # so `hostname` in a job step names the node it ran on. The munge socket is a path on the shared
    # filesystem, reachable from every network namespace. A private mount namespace gives the slurmd and
    # its jobs (only them) two files of the state directory: etc/hosts over /etc/hosts, so node1/node2
    # resolve to their namespace addresses, which a multi-node job needs (torchrun's rendezvous endpoint
    # is a node name; gloo binds to the address its host name resolves to); and etc/ over /etc/slurm, so
    # a command in a job finds this cluster's slurm.conf without SLURM_CONF (the Snakemake plugin drops
    # it), whatever the machine's /etc/slurm/slurm.conf is (the one-node cluster's --system-conf link).
    printf '127.0.0.1 localhost\n%s.1 vpr-slurm-bridge\n' "$NET" >"$STATE/etc/hosts"
    for n in "${NODE_NAMES[@]}"; do
        printf '%s.%d %s\n' "$NET" $((${n#node} + 1)) "$n" >>"$STATE/etc/hosts"
    done
    mkdir -p /etc/slurm   # (slurm-client's own directory: it exists already)
    for n in "${NODE_NAMES[@]}"; do
        mkdir -p "$STATE/spool/$n"
        # shellcheck disable=SC2016  # $1..$3 are expanded by the inner sh
        launch "slurmd-$n" nsenter --net="/run/netns/vpr-$n" unshare --uts --mount --propagation private \
            sh -c 'mount --bind "$2" /etc/hosts && mount --bind "$3" /etc/slurm && hostname "$1" &&
                   exec slurmd -D -N "$1"' sh "$n" "$STATE/etc/hosts" "$STATE/etc"
    done
else
    mkdir -p "$STATE/spool/localhost"
    launch slurmd-localhost slurmd -D -N localhost
fi

# Ready when every node is idle (or busy with jobs, when an already running cluster is checked again).
nodes_ready() {
    local states
    states=$(sinfo -h -N -p "$PARTITION" -o '%N %T') || return 1   # one line per node of the partition
    [[ $(grep -cE ' (idle|mixed|allocated|completing)$' <<<"$states") -eq ${#NODE_NAMES[@]} ]]
}
deadline=$(($(date +%s) + TIMEOUT))
until nodes_ready; do
    for n in "${NODE_NAMES[@]}"; do
        alive "slurmd-$n" || fail "slurmd for node $n exited during start-up"
    done
    alive slurmctld || fail "slurmctld exited during start-up"
    (($(date +%s) < deadline)) \
        || fail "node(s) not idle after ${TIMEOUT}s; sinfo says: $(sinfo -h -N -o '%N %T %E' 2>&1)"
    sleep 0.2
done

# The link is ours when it points to our config; a dangling link (a cluster gone without stop-cluster.sh)
# configures nothing and is replaced; anything else is another Slurm installation's and stays.
system_conf=
# Two-node mode: jobs see etc/slurm.conf as /etc/slurm/slurm.conf in any case (the slurmds' mount namespace).
if ((NODES == 2)); then system_conf=/etc/slurm/slurm.conf; fi
if ((SYSTEM_CONF)); then
    link=/etc/slurm/slurm.conf
    if [[ -L $link && $(readlink "$link") == "$CONF" ]]; then
        echo "$link" >"$STATE/system-conf"
        system_conf=$link
    elif [[ -e $link ]]; then
        log "warning: $link exists and is not this cluster's: not linked (srun inside Snakemake jobs will" \
            "use that configuration)"
    else
        mkdir -p /etc/slurm
        ln -sfn "$CONF" "$link"
        echo "$link" >"$STATE/system-conf"
        system_conf=$link
    fi
fi

account=$(sacctmgr -n -P list assoc where cluster="$CLUSTER" user=root format=account | head -n 1)
[[ -n $account ]] || fail "root has no association in cluster $CLUSTER"

names=$(IFS=,; echo "${NODE_NAMES[*]}")
cat >"$STATE/env" <<EOF
export SLURM_CONF=$CONF
export VPR_SLURM_STATE=$STATE
export VPR_SLURM_CLUSTER=$CLUSTER
export VPR_SLURM_PARTITION=$PARTITION
export VPR_SLURM_PARTITIONS=$PARTITION,cpu,gpu
export VPR_SLURM_ACCOUNT=$account
export VPR_SLURM_NODES=${#NODE_NAMES[@]}
export VPR_SLURM_NODE_NAMES=$names
export VPR_SLURM_SYSTEM_CONF=$system_conf
EOF
ms=$((($(date +%s%N) - t0) / 1000000))
log "cluster up in $((ms / 1000)).$((ms % 1000 / 100)) s" \
    "(state: $STATE; use: source $STATE/env)"
cat "$STATE/env"
