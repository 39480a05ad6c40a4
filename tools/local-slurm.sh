#!/usr/bin/env bash
# A single-node Slurm on this machine (controller and node on 127.0.0.1, munge, no accounting),
# for testing the pipeline's cluster path for real:
#
#     sudo tools/local-slurm.sh start     # installs Debian's slurm-wlm and munge if missing, starts the daemons
#     tools/local-slurm.sh status         # sinfo
#     sudo tools/local-slurm.sh stop
#
# Needs root and the OS package registry (Debian/Ubuntu apt) the first time. The node offers
# this machine's cores and memory, no GPU; job status is read with squeue (no accounting
# daemon), so MinJobAge keeps finished jobs visible long enough for Snakemake to see them.
set -euo pipefail

CONF_DIR=/etc/slurm
STATE=/var/spool/slurmctld
SPOOL=/var/spool/slurmd
LOG_DIR=/var/log/slurm

die() { echo "local-slurm: $*" >&2; exit 1; }

install_packages() {
    command -v slurmctld >/dev/null && command -v munged >/dev/null && return 0
    [ "$(id -u)" = 0 ] || die "slurm-wlm and munge are not installed and installing them needs root"
    command -v apt-get >/dev/null || die "slurm-wlm and munge are not installed and apt-get is not available"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || die "apt-get update failed (no access to the OS package registry?)"
    apt-get install -y -qq slurm-wlm munge >/dev/null || die "apt-get install slurm-wlm munge failed"
}

write_config() {
    local cpus mem
    cpus=$(nproc)
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
    mkdir -p "$CONF_DIR" "$STATE" "$SPOOL" "$LOG_DIR"
    cat > "$CONF_DIR/slurm.conf" <<EOF
# Written by tools/local-slurm.sh: one node, controller and node on 127.0.0.1.
ClusterName=local
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE
SlurmdSpoolDir=$SPOOL
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
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
    rm -f "$CONF_DIR/cgroup.conf"  # no cgroup plugin is used (proctrack/linuxproc, task/none)
}

start_munge() {
    if [ ! -s /etc/munge/munge.key ]; then
        mkdir -p /etc/munge
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
    fi
    local owner=root
    id munge >/dev/null 2>&1 && owner=munge
    chown "$owner" /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown "$owner" /run/munge /var/lib/munge /var/log/munge /etc/munge
    if ! munge -n >/dev/null 2>&1; then
        if [ "$owner" = munge ]; then
            runuser -u munge -- /usr/sbin/munged
        else
            /usr/sbin/munged --force
        fi
    fi
    for _ in $(seq 20); do munge -n >/dev/null 2>&1 && return 0; sleep 0.5; done
    die "munged did not start (see /var/log/munge/munged.log)"
}

start() {
    install_packages
    write_config
    start_munge
    pgrep -x slurmctld >/dev/null || slurmctld
    pgrep -x slurmd >/dev/null || slurmd
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

stop() {
    pkill -x slurmd 2>/dev/null || true
    pkill -x slurmctld 2>/dev/null || true
    for _ in $(seq 120); do
        pgrep -x slurmd >/dev/null || pgrep -x slurmctld >/dev/null || return 0
        sleep 0.5
    done
    die "slurmd/slurmctld did not stop"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) sinfo ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
