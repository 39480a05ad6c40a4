#!/usr/bin/env bash
# A single-node Slurm on this machine (controller and node on 127.0.0.1, munge, no accounting),
# for testing the pipeline's cluster path for real. Run as root (it writes /etc/slurm and starts daemons):
#
#     tools/local-slurm.sh start     # installs Debian's slurm-wlm and munge if missing, starts the daemons
#     tools/local-slurm.sh status    # sinfo
#     tools/local-slurm.sh stop      # stops only what start started, puts back the config it replaced
#
# Needs the OS package registry (Debian/Ubuntu apt) the first time. The node offers this machine's
# cores and memory, no GPU; a job runs on the CPUs it was given (task/affinity: `sbatch -c 1` sees one
# CPU; task/cgroup would do too, but needs a writable cgroup file system, which many containers lack).
# Job status is read with squeue (no accounting daemon), so MinJobAge keeps finished jobs visible long
# enough for Snakemake to see them.
#
# Safe on a shared machine: start refuses to run beside a slurmctld/slurmd it did not start; the daemons
# it starts (and munged, when it had to start it) write their PIDs under /run/mimic-local-slurm/, and
# stop signals those PIDs only. A /etc/slurm/slurm.conf or cgroup.conf that start replaces is kept as
# <name>.before-mimic-local-slurm and put back by stop. Daemons started by an older version of this
# script (PID files /run/slurmctld.pid and /run/slurmd.pid, named in the slurm.conf it wrote) are
# stopped through those PID files the same way.
set -euo pipefail

CONF_DIR=/etc/slurm
STATE=/var/spool/slurmctld
SPOOL=/var/spool/slurmd
LOG_DIR=/var/log/slurm
RUN_DIR=/run/mimic-local-slurm
MARKER="# Written by tools/local-slurm.sh"
BACKUP_SUFFIX=.before-mimic-local-slurm
CONFIGS=(slurm.conf cgroup.conf)

die() { echo "local-slurm: $*" >&2; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "$1 needs root (it writes $CONF_DIR and starts or stops daemons)"; }

install_packages() {
    command -v slurmctld >/dev/null && command -v munged >/dev/null && return 0
    command -v apt-get >/dev/null || die "slurm-wlm and munge are not installed and apt-get is not available"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || die "apt-get update failed (no access to the OS package registry?)"
    apt-get install -y -qq slurm-wlm munge >/dev/null || die "apt-get install slurm-wlm munge failed"
}

is_ours() { [ -f "$1" ] && head -n 1 "$1" | grep -qF "$MARKER"; }

# The PID in FILE when it names a live process called NAME (a stale file or a reused PID gives nothing).
live_pid() {
    local file=$1 name=$2 pid
    [ -s "$file" ] || return 1
    pid=$(tr -dc '0-9' < "$file")
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] && echo "$pid"
}

# Where the daemon NAME (slurmctld, slurmd) writes its PID: the path in our slurm.conf (an older version of
# this script used /run), else $RUN_DIR.
pid_file() {
    local name=$1 key path=""
    key=$([ "$name" = slurmctld ] && echo SlurmctldPidFile || echo SlurmdPidFile)
    if is_ours "$CONF_DIR/slurm.conf"; then
        path=$(sed -n "s/^$key=//p" "$CONF_DIR/slurm.conf" | tail -n 1)
    fi
    echo "${path:-$RUN_DIR/$name.pid}"
}

# The PIDs of the live processes called NAME... (zombies left out), on one line.
running() {
    local name
    for name in "$@"; do { ps -C "$name" -o pid=,stat= || true; } | awk '$2 !~ /^Z/ {printf "%s ", $1}'; done
    return 0
}

refuse_foreign_daemons() {
    local name pids
    for name in slurmctld slurmd; do
        live_pid "$(pid_file "$name")" "$name" >/dev/null && continue
        pids=$(running "$name")
        [ -z "$pids" ] || die "a $name this script did not start is running (pid ${pids% }); stop it as its owner" \
            "first (this script signals only the PIDs it recorded under $RUN_DIR)"
    done
}

# Keep an existing config that is not ours as <name>$BACKUP_SUFFIX (once: a second start keeps the first backup).
back_up_configs() {
    local name
    for name in "${CONFIGS[@]}"; do
        local file=$CONF_DIR/$name
        [ -e "$file" ] && ! is_ours "$file" && [ ! -e "$file$BACKUP_SUFFIX" ] && mv "$file" "$file$BACKUP_SUFFIX"
    done
    return 0
}

restore_configs() {
    local name
    for name in "${CONFIGS[@]}"; do
        local file=$CONF_DIR/$name
        is_ours "$file" && rm -f "$file"
        [ -e "$file$BACKUP_SUFFIX" ] && mv "$file$BACKUP_SUFFIX" "$file"
    done
    return 0
}

write_config() {
    local cpus mem
    cpus=$(nproc)
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
    mkdir -p "$CONF_DIR" "$STATE" "$SPOOL" "$LOG_DIR" "$RUN_DIR"
    cat > "$CONF_DIR/slurm.conf" <<EOF
$MARKER: one node, controller and node on 127.0.0.1.
ClusterName=local
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE
SlurmdSpoolDir=$SPOOL
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=600
MpiDefault=none
SchedulerType=sched/backfill
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
    # no cgroup plugin is used (proctrack/linuxproc, task/affinity): a cgroup.conf not ours was moved aside
}

start_munge() {
    if [ ! -s /etc/munge/munge.key ]; then
        mkdir -p /etc/munge
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
    fi
    munge -n >/dev/null 2>&1 && return 0  # a running munged (the system's, or ours from an earlier start)
    local owner=root
    id munge >/dev/null 2>&1 && owner=munge
    chown "$owner" /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown "$owner" /run/munge /var/lib/munge /var/log/munge /etc/munge
    if [ "$owner" = munge ]; then
        runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
    else
        /usr/sbin/munged --force --pid-file=/run/munge/munged.pid
    fi
    for _ in $(seq 20); do
        if munge -n >/dev/null 2>&1; then
            cp /run/munge/munged.pid "$RUN_DIR/munged.pid"  # ours to stop
            return 0
        fi
        sleep 0.5
    done
    die "munged did not start (see /var/log/munge/munged.log)"
}

# Whether a slurmctld or slurmd this script started (by its PID file) is running.
running_ours() {
    live_pid "$(pid_file slurmctld)" slurmctld >/dev/null || live_pid "$(pid_file slurmd)" slurmd >/dev/null
}

start() {
    need_root start
    install_packages
    mkdir -p "$RUN_DIR"
    refuse_foreign_daemons
    if running_ours; then
        echo "local-slurm: already running (started earlier; \`stop\` then \`start\` writes this version's config)"
    else
        back_up_configs
        write_config
        start_munge
        slurmctld
        slurmd
    fi
    for _ in $(seq 60); do
        if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
            sinfo
            return 0
        fi
        scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true
        sleep 1
    done
    sinfo || true
    die "the node did not become idle (see $LOG_DIR/slurmctld.log and slurmd.log)"
}

# Signal the process in PID_FILE when it is NAME, and wait until it has gone.
stop_recorded() {
    local file=$1 name=$2 pid
    if pid=$(live_pid "$file" "$name"); then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 120); do
            [ -d "/proc/$pid" ] || break
            sleep 0.5
        done
        [ -d "/proc/$pid" ] && die "$name (pid $pid) did not stop"
    fi
    rm -f "$file"
}

stop() {
    need_root stop
    stop_recorded "$(pid_file slurmd)" slurmd
    stop_recorded "$(pid_file slurmctld)" slurmctld
    stop_recorded "$RUN_DIR/munged.pid" munged
    restore_configs
    local left
    left=$(running slurmctld slurmd)
    [ -z "$left" ] || echo "local-slurm: left running (not started by this script): pid ${left% }" >&2
    return 0
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) sinfo ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
