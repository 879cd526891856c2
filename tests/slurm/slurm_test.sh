#!/usr/bin/env bash
# scripts/slurm/tandem.sbatch under a real Slurm (Debian's slurmctld, slurmd, munge) on this one
# machine: a controller and three nodes, each in its own network and UTS namespace, joined by a
# bridge that lives in a namespace of its own (10.77.0.0/24 exists only there; no route out).
# The job's coordinator must run on the first node, its clients on the other two, over tcp with
# CURVE, and the run must complete. Usage: slurm_test.sh PATH/TO/tandem   (as root)
set -euo pipefail
TANDEM="$(readlink -f "$1")"
SRC="${TANDEM_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}"
LIMIT_S=${SLURM_TEST_JOB_LIMIT_S:-150}  # the job, from sbatch to its end

skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "needs root (network namespaces, Slurm daemons as SlurmUser=root)"
for tool in slurmctld slurmd munged sbatch srun scontrol scancel sinfo ip nsenter unshare python3; do
  command -v "$tool" >/dev/null ||
    { echo "FAIL: no $tool; run scripts/install-deps.sh" >&2; exit 1; }
done

START=$SECONDS
WORK="$(mktemp -d /tmp/tandem-slurm-XXXXXX)"
TAG="ts$$"                        # namespace names unique to this run
SWITCH="$TAG-sw"                  # holds the bridge
CTL_NS="$TAG-ctl"; CTL_HOST=tandem-ctl; CTL_IP=10.77.0.1
NODES=(tandem-n1 tandem-n2 tandem-n3)
NODE_IPS=(10.77.0.11 10.77.0.12 10.77.0.13)
NODE_NS=("$TAG-n1" "$TAG-n2" "$TAG-n3")
DAEMONS=()                        # pids of munged, slurmctld and every slurmd, all started here
NAMESPACES=()
JOB=

log() { printf '[slurm_test %3ds] %s\n' $((SECONDS - START)) "$*"; }

stop_pid() {  # PID: TERM, up to 5 s, then KILL
  local pid="$1" i
  kill -TERM "$pid" 2>/dev/null || return 0
  for (( i = 0; i < 50; ++i )); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  set +e
  if [ -n "$JOB" ]; then
    timeout 10 ip netns exec "$CTL_NS" scancel "$JOB" 2>/dev/null
  fi
  local i pid
  for (( i = ${#DAEMONS[@]} - 1; i >= 0; --i )); do stop_pid "${DAEMONS[i]}"; done
  # What slurmd started (slurmstepd, the job's processes) is re-parented away from it; it can only
  # live in the node namespaces, so those are emptied by pid before they go.
  local left=()
  for ns in "${NAMESPACES[@]}"; do mapfile -t -O "${#left[@]}" left < <(ip netns pids "$ns" 2>/dev/null); done
  for pid in "${left[@]}"; do kill -KILL "$pid" 2>/dev/null; done
  for (( i = 0; i < 50; ++i )); do  # gone, not just signalled, before the test ends
    for pid in "${left[@]}"; do [ -e "/proc/$pid" ] && { sleep 0.1; continue 2; }; done
    break
  done
  for ns in "${NAMESPACES[@]}"; do ip netns del "$ns" 2>/dev/null; done
  if [ -n "${SLURM_TEST_KEEP:-}" ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  for f in "$WORK"/ctl/slurmctld.log "$WORK"/nodes/*/slurmd.log "$WORK"/job/tandem-*.out \
           "$WORK"/job/runs/*/coordinator.log "$WORK"/job/logs/client-*.log "$WORK"/munge/munged.log; do
    [ -f "$f" ] && { echo "--- $f"; tail -n 20 "$f"; }
  done >&2
  exit 1
}

# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND until it succeeds.
wait_for() {
  local limit="$1" what="$2"; shift 2
  local end=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$end" ] || fail "timed out after ${limit}s waiting for: $what"
    sleep 0.5
  done
}

# in_node NS HOSTNAME COMMAND...: COMMAND in network namespace NS, with its own hostname and an
# /etc/hosts that names the cluster (bind-mounted in a private mount namespace, so the machine's
# own /etc/hosts is untouched). Every step execs, so $! of a backgrounded in_node is COMMAND's pid.
# nsenter, not `ip netns exec`: the latter remounts /sys, hiding the cgroup mounts slurmd checks.
in_node() {
  local ns="$1" host="$2"; shift 2
  # shellcheck disable=SC2016  # expanded by the inner sh
  exec nsenter --net="/run/netns/$ns" unshare --uts --mount --propagation private \
    sh -c 'mount --bind "$1" /etc/hosts && hostname "$2" && shift 2 && exec "$@"' \
    in-node "$WORK/hosts" "$host" "$@"
}

mkdir -p "$WORK"/{munge,ctl/state,job}
chmod 755 "$WORK" "$WORK/munge"  # munged wants its socket's directories searchable by all
log "work dir $WORK, namespaces $TAG-*"

# --- The network: a bridge in its own namespace, one veth to every host's namespace. ---------
add_ns() { ip netns add "$1"; NAMESPACES+=("$1"); ip -n "$1" link set lo up; }
add_ns "$SWITCH"
ip -n "$SWITCH" link add br0 type bridge
ip -n "$SWITCH" link set br0 up
attach() {  # NS IP: NS's eth0 at IP/24, its peer on the bridge
  local ns="$1" ip="$2" port="p${#NAMESPACES[@]}"
  add_ns "$ns"
  ip -n "$SWITCH" link add "$port" type veth peer name eth0 netns "$ns"
  ip -n "$SWITCH" link set "$port" master br0 up
  ip -n "$ns" addr add "$ip/24" dev eth0
  ip -n "$ns" link set eth0 up
}
attach "$CTL_NS" "$CTL_IP"
{ echo "127.0.0.1 localhost"; echo "$CTL_IP $CTL_HOST"; } > "$WORK/hosts"
for i in "${!NODES[@]}"; do
  attach "${NODE_NS[i]}" "${NODE_IPS[i]}"
  echo "${NODE_IPS[i]} ${NODES[i]}" >> "$WORK/hosts"
done
# Nothing may leave the machine: no namespace here has a route beyond its own /24.
for ns in "${NAMESPACES[@]}"; do
  [ -z "$(ip -n "$ns" route show default)" ] || fail "namespace $ns has a default route"
done

# --- munge: one daemon; its socket is a file, so every namespace reaches it. ------------------
dd if=/dev/urandom of="$WORK/munge/munge.key" bs=1024 count=1 status=none
chmod 600 "$WORK/munge/munge.key"
munged -F --socket="$WORK/munge/munge.sock" --key-file="$WORK/munge/munge.key" \
  --pid-file="$WORK/munge/munged.pid" --log-file="$WORK/munge/munged.log" \
  --seed-file="$WORK/munge/munged.seed" 2> "$WORK/munge/munged.err" &
DAEMONS+=($!)
wait_for 10 "munged's socket" test -S "$WORK/munge/munge.sock"

# --- Slurm: a controller and three nodes, state and spool under WORK. -------------------------
export SLURM_CONF="$WORK/slurm.conf"
{
  cat <<EOF
ClusterName=tandemtest
SlurmctldHost=$CTL_HOST($CTL_IP)
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$WORK/munge/munge.sock
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$WORK/ctl/state
SlurmctldPidFile=$WORK/ctl/slurmctld.pid
SlurmctldLogFile=$WORK/ctl/slurmctld.log
SlurmdSpoolDir=$WORK/nodes/%n/spool
SlurmdPidFile=$WORK/nodes/%n/slurmd.pid
SlurmdLogFile=$WORK/nodes/%n/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
SlurmdTimeout=60
MinJobAge=600
EOF
  for i in "${!NODES[@]}"; do
    echo "NodeName=${NODES[i]} NodeHostname=${NODES[i]} NodeAddr=${NODE_IPS[i]} CPUs=$(nproc) State=UNKNOWN"
  done
  echo "PartitionName=tandem Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
} > "$SLURM_CONF"

in_node "$CTL_NS" "$CTL_HOST" slurmctld -D -i -f "$SLURM_CONF" 2> "$WORK/ctl/slurmctld.err" &
DAEMONS+=($!)
for i in "${!NODES[@]}"; do
  mkdir -p "$WORK/nodes/${NODES[i]}/spool"
  in_node "${NODE_NS[i]}" "${NODES[i]}" slurmd -D -f "$SLURM_CONF" -N "${NODES[i]}" \
    2> "$WORK/nodes/${NODES[i]}/slurmd.err" &
  DAEMONS+=($!)
done
ctl() { ip netns exec "$CTL_NS" timeout 20 "$@"; }
nodes_idle() { [ "$(ctl sinfo -h -N -t idle -o '%N' | sort -u | wc -l)" -eq "${#NODES[@]}" ]; }
wait_for 60 "all ${#NODES[@]} nodes idle" nodes_idle
log "cluster up: $(ctl sinfo -h -N -o '%N(%T)' | sort -u | tr '\n' ' ')"

# --- The job: tandem.sbatch as a researcher submits it. -------------------------------------
# A thin wrapper records where each tandem process ran (hostname, SLURMD_NODENAME, subcommand)
# and turns on debug logging, which is where the coordinator logs each accepted CURVE handshake.
cat > "$WORK/tandem" <<EOF
#!/bin/sh
echo "\$(hostname) \${SLURMD_NODENAME:--} \$*" >> "$WORK/where.log"
exec "$TANDEM" --log-level debug "\$@"
EOF
chmod 755 "$WORK/tandem"
cd "$WORK/job"
export TANDEM="$WORK/tandem" CONFIG="$SRC/tests/slurm/slurm.toml" KEYS="$WORK/job/keys" \
       LOG_DIR="$WORK/job/logs" PORT=5555 CLIENT_GRACE_S=20 TANDEM_THREADS=1 \
       TANDEM_SLOTS_DIR="$WORK/slots"
# The script asks for 8 CPUs per task; these nodes have nproc.
JOB=$(ctl sbatch --parsable --nodes=${#NODES[@]} --cpus-per-task="$(nproc)" \
      --chdir="$WORK/job" --output="$WORK/job/tandem-%j.out" "$SRC/scripts/slurm/tandem.sbatch") ||
  fail "sbatch refused the job"
log "submitted job $JOB"
job_state() { ctl scontrol show job "$JOB" | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p'; }
job_done() { case "$(job_state)" in PENDING|RUNNING|CONFIGURING|COMPLETING|"") return 1 ;; esac; }
wait_for "$LIMIT_S" "job $JOB to finish" job_done
STATE=$(job_state)
log "job $JOB $STATE on $(ctl scontrol show job "$JOB" | sed -n 's/.* NodeList=\([^ ]*\).*/\1/p')"

# --- What must hold. -----------------------------------------------------------------------
OUT="$WORK/job/tandem-$JOB.out"
RUN="$WORK/job/runs/slurm"
[ "$STATE" = COMPLETED ] || fail "job $JOB ended $STATE"
grep -q "tandem.sbatch: done" "$OUT" || fail "the script did not finish cleanly"
echo "--- where each tandem process ran (hostname, SLURMD_NODENAME, arguments)"
cut -c1-110 "$WORK/where.log"
ran_on() { grep -E "^$1 $1 $2" "$WORK/where.log"; }
ran_on "${NODES[0]}" coordinator >/dev/null || fail "no coordinator on ${NODES[0]}"
[ "$(grep -c " coordinator " "$WORK/where.log")" -eq 1 ] || fail "not exactly one coordinator"
ran_on "${NODES[1]}" "client .*--id 0 " >/dev/null || fail "client 0 not on ${NODES[1]}"
ran_on "${NODES[2]}" "client .*--id 1 " >/dev/null || fail "client 1 not on ${NODES[2]}"
grep -q "client .*--connect tcp://${NODES[0]}:5555" "$WORK/where.log" ||
  fail "clients did not dial the coordinator's node by name"

echo "--- CURVE"
COORD_LOG="$RUN/coordinator.log"
[ -f "$COORD_LOG" ] || fail "no $COORD_LOG"
grep -h "CURVE" "$COORD_LOG" | cut -c1-160
for k in 0 1; do
  grep -h -e "CURVE" -e "handshake" "$LOG_DIR/client-$k.log" | sed "s/^/client-$k on ${NODES[k + 1]}: /"
done
grep -q "bound to tcp://0.0.0.0:5555 (CURVE on)" "$COORD_LOG" || fail "coordinator not bound with CURVE"
for k in 0 1; do
  grep -q "connecting to tcp://${NODES[0]}:5555 (CURVE on)" "$LOG_DIR/client-$k.log" ||
    fail "client $k did not connect with CURVE"
  grep -q "handshake with tcp://.* succeeded" "$LOG_DIR/client-$k.log" ||
    fail "client $k logged no successful handshake"
done
grep -q "accepted CURVE client 'client-0' from ${NODE_IPS[1]}" "$COORD_LOG" ||
  fail "no CURVE handshake of client-0 from ${NODES[1]} (${NODE_IPS[1]})"
grep -q "accepted CURVE client 'client-1' from ${NODE_IPS[2]}" "$COORD_LOG" ||
  fail "no CURVE handshake of client-1 from ${NODES[2]} (${NODE_IPS[2]})"
[ -f "$WORK/job/keys/allow-list.txt" ] || fail "the script made no keys"

echo "--- run"
ROUNDS=$(grep -c '"round":[1-9]' "$RUN/metrics.jsonl" || true)
[ "$ROUNDS" -eq 2 ] || fail "expected 2 rounds in metrics.jsonl, found $ROUNDS"
[ -f "$RUN/summary.json" ] || fail "no summary.json"
python3 - "$RUN/metrics.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("round", 0) >= 1:
        print(" ".join(f"{k}={m[k]}" for k in sorted(m) if k in ("round", "cohort", "results")
                       or (k.endswith("loss") and "." not in k)))
PY
log "PASS: job $JOB, coordinator on ${NODES[0]}, clients on ${NODES[1]} and ${NODES[2]}, $ROUNDS rounds over tcp+CURVE"
