#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, to rehearse a cluster sweep (and for the SLURM tests).
#
#   scripts/slurm_local.sh start    # install slurm-wlm + munge if missing, start munged, slurmctld, slurmd
#   scripts/slurm_local.sh stop     # stop exactly the daemons this script started (its pid files)
#   scripts/slurm_local.sh status   # up or stopped, and the node's state
#   scripts/slurm_local.sh install  # only install the packages (CI does this before the tests)
# Exit status 3: SLURM is not installed and cannot be here (not root, or no apt-get); the tests skip then.
#
# Everything lives in SLURM_DIR (<repo>/.slurm, git-ignored): slurm.conf, a munge key and socket,
# controller and node state, logs, pid files. The daemons run as root (slurmd must, to start jobs as
# their user), with ProctrackType=proctrack/linuxproc and TaskPlugin=task/none (no cgroups needed)
# and no accounting database (AccountingStorageType=accounting_storage/none).
#
# Client commands (sbatch, squeue, scancel, sinfo) find a cluster through SLURM_CONF or
# /etc/slurm/slurm.conf. When the machine has no /etc/slurm/slurm.conf of its own, `start` links
# it to SLURM_DIR/slurm.conf, so `python train.py hydra/launcher=slurm -m` needs no extra setting;
# `stop` removes that link (only if it is this script's). Otherwise it says to export SLURM_CONF.
#
# Settings (environment):
#   SLURM_DIR=<repo>/.slurm   config and state
#   SLURMCTLD_PORT=6817       slurmctld port (127.0.0.1)
#   SLURMD_PORT=6818          slurmd port
#   SLURM_KILL_WAIT=10        seconds between SIGTERM and SIGKILL when a job is cancelled or times out
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SLURM_DIR="$(mkdir -p "${SLURM_DIR:-$REPO/.slurm}" && cd "${SLURM_DIR:-$REPO/.slurm}" && pwd)"
SLURMCTLD_PORT="${SLURMCTLD_PORT:-6817}"
SLURMD_PORT="${SLURMD_PORT:-6818}"
SLURM_KILL_WAIT="${SLURM_KILL_WAIT:-10}"
[ -f "$SLURM_DIR/.gitignore" ] || echo '*' >"$SLURM_DIR/.gitignore"  # cluster state is never committed
CONF="$SLURM_DIR/slurm.conf"
RUN="$SLURM_DIR/run"
LOGS="$SLURM_DIR/log"
MUNGE="$SLURM_DIR/munge"
ETC_CONF=/etc/slurm/slurm.conf
export SLURM_CONF="$CONF"

say() { echo "[slurm_local] $*" >&2; }
die() { say "error: $*"; exit 1; }
unavailable() { say "error: $*"; exit 3; }

alive() {  # alive PIDFILE: the pid in it is a running process
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

install_slurm() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null && return 0
    [ "$(id -u)" = 0 ] || unavailable "slurm-wlm/munge are not installed and this is not root: run \
'apt-get install slurmctld slurmd slurm-client munge' as root"
    command -v apt-get >/dev/null || unavailable "slurm-wlm/munge are not installed and there is no apt-get here"
    say "installing Debian's slurmctld, slurmd, slurm-client and munge"
    apt-get update -qq || unavailable "apt-get update failed: the package registry is unreachable"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null \
        || unavailable "apt-get install slurmctld slurmd slurm-client munge failed"
}

write_config() {
    local host node cpus mem
    host="$(hostname -s)"
    node="$(slurmd -C | head -n 1)"  # NodeName=HOST CPUs=.. Boards=.. ... RealMemory=..
    cpus="$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$node")"
    mem="$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$node")"
    [ -n "$cpus" ] && [ -n "$mem" ] || die "cannot read this machine's CPUs and memory from 'slurmd -C': $node"
    mkdir -p "$RUN" "$LOGS" "$SLURM_DIR/state/ctld" "$SLURM_DIR/state/slurmd"
    : >"$SLURM_DIR/plugstack.conf"
    cat >"$CONF" <<EOF
# Written by scripts/slurm_local.sh: a one-node cluster for rehearsals and tests. Regenerated at each start.
ClusterName=losslab
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$SLURMCTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE/munge.socket
StateSaveLocation=$SLURM_DIR/state/ctld
SlurmdSpoolDir=$SLURM_DIR/state/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
PlugStackConfig=$SLURM_DIR/plugstack.conf
# no cgroups: processes are tracked through their parent pids, and tasks are not bound
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
# no accounting database: sacct has nothing to read (LossLab asks squeue instead, see README)
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# finished jobs stay known to squeue/scontrol for 5 minutes
MinJobAge=300
KillWait=$SLURM_KILL_WAIT
# a step whose processes outlive SIGKILL this long drains the node ("Kill task failed"); a loaded
# machine was seen to need more than the default 60 s. \`start\` resumes a drained node.
UnkillableStepTimeout=180
ReturnToService=2
MailProg=/bin/true
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
    alive "$RUN/munged.pid" && return 0
    mkdir -p "$MUNGE"
    chmod 700 "$MUNGE"
    if [ ! -s "$MUNGE/munge.key" ]; then
        dd if=/dev/urandom of="$MUNGE/munge.key" bs=1024 count=1 status=none
        chmod 400 "$MUNGE/munge.key"
    fi
    # --force: munged refuses to run as root, and checks the permissions of every folder above its
    # socket; this private instance's files are root's own and mode 700/400.
    munged --force --socket="$MUNGE/munge.socket" --key-file="$MUNGE/munge.key" \
        --pid-file="$RUN/munged.pid" --log-file="$LOGS/munged.log" --seed-file="$MUNGE/munged.seed" \
        || die "munged did not start; see $LOGS/munged.log"
}

link_etc_conf() {
    if [ -L "$ETC_CONF" ] && [ "$(readlink "$ETC_CONF")" = "$CONF" ]; then return 0; fi
    if [ -L "$ETC_CONF" ] && [ ! -e "$ETC_CONF" ]; then rm -f "$ETC_CONF"; fi  # a stale link (clone moved)
    if [ -e "$ETC_CONF" ]; then
        say "this machine has its own $ETC_CONF: before using this cluster, export SLURM_CONF=$CONF"
        return 0
    fi
    if mkdir -p /etc/slurm 2>/dev/null && ln -s "$CONF" "$ETC_CONF" 2>/dev/null; then
        echo "$ETC_CONF" >"$RUN/etc-link"
    else
        say "cannot link $ETC_CONF: before using this cluster, export SLURM_CONF=$CONF"
    fi
}

wait_idle() {
    local state=""
    for _ in $(seq 1 60); do
        state="$(sinfo -h -N -o %T 2>/dev/null | head -n 1 || true)"
        case "$state" in
            idle | mixed | allocated) return 0 ;;
            drain* | down*) scontrol update NodeName="$(hostname -s)" State=RESUME >/dev/null 2>&1 || true ;;
        esac
        sleep 0.5
    done
    die "the node is not idle after 30 s (state: '${state:-none}'); see $LOGS/slurmctld.log and $LOGS/slurmd.log"
}

start() {
    [ "$(id -u)" = 0 ] || unavailable "a local SLURM cluster runs as root (slurmd starts jobs as their user)"
    install_slurm
    if alive "$RUN/slurmctld.pid" && alive "$RUN/slurmd.pid"; then
        say "already running (SLURM_CONF=$CONF)"
        link_etc_conf
        wait_idle
        return 0
    fi
    write_config
    start_munge
    # -c: each start is a fresh cluster; jobs left in the queue by the last run are dropped
    alive "$RUN/slurmctld.pid" || slurmctld -c -f "$CONF" || die "slurmctld did not start; see $LOGS/slurmctld.log"
    alive "$RUN/slurmd.pid" || slurmd -f "$CONF" || die "slurmd did not start; see $LOGS/slurmd.log"
    link_etc_conf
    wait_idle
    say "up: node $(hostname -s), $(sinfo -h -N -o '%c CPUs, %m MB') (SLURM_CONF=$CONF)"
}

stop_one() {  # stop_one NAME: SIGTERM the pid in run/NAME.pid, wait up to 20 s, then SIGKILL
    local pidfile="$RUN/$1.pid" pid
    alive "$pidfile" || { rm -f "$pidfile"; return 0; }
    pid="$(cat "$pidfile")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; return 0; }
        sleep 0.5
    done
    say "$1 (pid $pid) ignored SIGTERM for 20 s: SIGKILL"
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
}

stop() {
    # the node first (it ends running jobs' steps), then the controller, then munge
    stop_one slurmd
    stop_one slurmctld
    stop_one munged
    if [ -s "$RUN/etc-link" ] && [ -L "$ETC_CONF" ] && [ "$(readlink "$ETC_CONF")" = "$CONF" ]; then
        rm -f "$ETC_CONF"
    fi
    rm -f "$RUN/etc-link"
    say "stopped (state kept in $SLURM_DIR)"
}

status() {
    local name
    for name in munged slurmctld slurmd; do
        if alive "$RUN/$name.pid"; then echo "$name: running (pid $(cat "$RUN/$name.pid"))"; else echo "$name: stopped"; fi
    done
    if alive "$RUN/slurmctld.pid"; then sinfo -h -N -o "node %N: %T, %c CPUs, %m MB" 2>/dev/null || true; fi
    echo "SLURM_CONF=$CONF"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    install) install_slurm ;;
    *) die "usage: $0 start|stop|status|install" ;;
esac
