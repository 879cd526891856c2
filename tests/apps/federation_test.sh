#!/usr/bin/env bash
# End-to-end federated runs with real processes: `federation_test.sh SCENARIO TANDEM`.
# Scenarios: ipc, inproc-100, strategies, tcp-curve, kill-client, resume, allow-list, straggler,
# private, distill-down, distill-up, fedmkt, fedcollm, heterogeneous, heterogeneous-fedavg. Each
# works in its own temporary directory, bounds every wait, and stops every process it started.
set -euo pipefail
SCENARIO="$1"
TANDEM="$(readlink -f "$2")"
SRC="${TANDEM_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}"
WORK="$(mktemp -d /tmp/tandem-fed-XXXXXX)"
export TANDEM_SLOTS_DIR="$WORK/slots"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  [ -n "${TANDEM_TEST_KEEP:-}" ] && echo "kept $WORK" >&2 || rm -rf "$WORK"
}
trap cleanup EXIT
cd "$WORK"

fail() { echo "FAIL [$SCENARIO]: $*" >&2; for f in runs/*/coordinator.log runs/*/logs/*.log coord*.out client*.out; do [ -f "$f" ] && { echo "--- $f"; tail -n 25 "$f"; }; done >&2; exit 1; }

# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND until it succeeds.
wait_for() {
  local limit="$1" what="$2"; shift 2
  local end=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$end" ] || fail "timed out after ${limit}s waiting for: $what"
    sleep 0.2
  done
}

# The number of metrics lines of rounds >= 1 in RUN_DIR.
rounds_done() { [ -f "$1/metrics.jsonl" ] && grep -c '"round":[1-9]' "$1/metrics.jsonl" || echo 0; }
has_rounds() { [ "$(rounds_done "$1")" -ge "$2" ]; }
# The value of KEY in the metrics line of ROUND.
metric() {
  /usr/bin/python3 - "$1" "$2" "$3" <<'EOF'
import json, sys
for line in open(sys.argv[1] + "/metrics.jsonl"):
    j = json.loads(line)
    if j.get("round") == int(sys.argv[2]):
        print(j.get(sys.argv[3], ""))
EOF
}

# A small, quick run: slm-micro, 3 clients, few local steps, small evaluations.
cat > base.toml <<'EOF'
name = "fed"
seed = 3
out_dir = "runs"
[model]
preset = "slm-micro"
[data]
source = "fortunes"
validation_fraction = 0.05
test_fraction = 0.05
[federation]
clients = 3
transport = "ipc"
partition = "by-category"
rounds = 3
round_deadline_s = 60
wait_for_clients_s = 60
heartbeat_ms = 200
peer_timeout_ms = 2000
[client]
local_steps = 6
batch = 4
lr = 3e-3
give_up_s = 60
[eval]
tokens = 4096
EOF

start_coordinator() {  # NAME [args...]: the coordinator in the background, output in coord-NAME.out
  local name="$1"; shift
  "$TANDEM" coordinator base.toml "$@" > "coord-$name.out" 2>&1 &
  PIDS+=($!)
  COORD_PID=$!
}
start_client() {  # K ENDPOINT [args...]
  local k="$1" ep="$2"; shift 2
  TANDEM_THREADS=1 "$TANDEM" client base.toml --id "$k" --connect "$ep" "$@" > "client$k-$RANDOM.out" 2>&1 &
  PIDS+=($!)
  CLIENT_PID[$k]=$!
}
# The endpoint a coordinator prints on stdout. Wait for that line itself: the log line
# "[coordinator] listening on ..." goes to stderr first, and a wait on it alone raced the print.
# Sets ep (not a $(...): a timeout's fail must end the script, not a subshell).
await_endpoint() {  # FILE
  wait_for 30 "the coordinator's endpoint in $1" grep -q "^coordinator listening on " "$1"
  ep="$(sed -n 's/^coordinator listening on //p' "$1" | head -1)"
}
declare -a CLIENT_PID

# A small "LLM" (runs/llm) trained on the public categories, with base.toml's data given the
# same public split: the teacher or the cloud model of the distillation scenarios.
public_llm() {
  sed -i 's/^source = "fortunes"$/source = "fortunes"\npublic_categories = ["art", "zippy", "linux"]/' base.toml
  cat > llm.toml <<'EOF2'
name = "llm"
seed = 5
out_dir = "runs"
[model]
preset = "slm-micro"
n_layer = 3
[data]
source = "fortunes"
public_categories = ["art", "zippy", "linux"]
validation_fraction = 0.05
test_fraction = 0.05
[train]
on = "public"
batch = 8
steps = 30
lr = 3e-3
eval_every = 0
checkpoint_every = 0
EOF2
  "$TANDEM" train llm.toml > llm.out 2>&1 || fail "LLM training failed: $(tail -5 llm.out)"
}

# public_llm, and an SLM (runs/slm) trained on the same split, from which base.toml's clients
# start: what distill-up, fedmkt and fedcollm start from.
public_llm_and_slm() {
  public_llm
  "$TANDEM" train llm.toml --set name=slm --set model.n_layer=2 > slm.out 2>&1 ||
    fail "SLM training failed: $(tail -5 slm.out)"
  sed -i 's/^preset = "slm-micro"$/preset = "slm-micro"\ninit_checkpoint = "runs\/slm\/checkpoints\/model.safetensors"/' base.toml
}

# fedcollm's sections in base.toml, with the LLM of run directory $1: small adapters, a few
# windows and server steps.
fedcollm_section() {
  cat >> base.toml <<EOF2
[algorithm]
name = "fedcollm"
[model.lora]
rank = 4
alpha = 8.0
[fedcollm]
llm = "$1/checkpoints/model.safetensors"
windows = 4
server_steps = 6
server_batch = 2
slm_lr = 1e-3
server_lr = 1e-4
EOF2
}

case "$SCENARIO" in
ipc)
  # Local training by epochs, and a second task each round: the clients evaluate the new model.
  TANDEM_THREADS=1 "$TANDEM" run base.toml --set eval.clients=true \
    --set client.local_epochs=0.002 > run.out 2>&1 || fail "tandem run failed: $(tail -5 run.out)"
  [ -n "$(metric runs/fed 3 client_val_loss)" ] || fail "no client evaluation in round 3"
  [ "$(rounds_done runs/fed)" -eq 3 ] || fail "expected 3 rounds in metrics.jsonl"
  first="$(metric runs/fed 0 val_loss)"; last="$(metric runs/fed 3 val_loss)"
  /usr/bin/python3 -c "import sys; sys.exit(0 if $last < $first - 0.05 else 1)" ||
    fail "held-out loss did not fall: $first -> $last"
  [ "$(metric runs/fed 3 results)" = "3.0" ] || fail "round 3 did not get 3 results (not one per task)"
  [ "$(metric runs/fed 3 task_results.fedavg.eval)" = "3.0" ] || fail "round 3 did not get 3 evaluation results"
  [ "$(metric runs/fed 1 bytes_up)" != "0.0" ] || fail "no bytes counted"
  grep -q '"final_test_loss"' runs/fed/summary.json || fail "summary.json lacks the final loss"
  [ -f runs/fed/checkpoints/model.safetensors ] || fail "no model checkpoint"
  grep -q "held-out loss" run.out || fail "no final summary line"
  # The report reads the run.
  "$TANDEM" report runs/fed > report.out 2>&1 || fail "tandem report failed: $(tail -3 report.out)"
  grep -q "val_loss" report.out || fail "the report's table lacks val_loss"
  ;;
inproc-100)
  # 100 clients as threads of one process over inproc://, the same round engine.
  TANDEM_THREADS=1 "$TANDEM" run base.toml --set federation.transport=inproc \
    --set federation.clients=100 --set federation.rounds=2 --set federation.partition=iid \
    --set client.local_steps=2 --set client.batch=2 --set eval.tokens=1024 \
    > run.out 2>&1 || fail "tandem run with 100 in-process clients failed: $(tail -5 run.out)"
  [ "$(metric runs/fed 2 results)" = "100.0" ] || fail "round 2 did not get 100 results"
  ;;
strategies)
  # Every server strategy, end to end over inproc: the held-out loss falls in 3 rounds.
  for spec in "fedprox proximal_mu=0.01" "fedavgm server_lr=1.0 momentum=0.5" \
      "fedadam server_lr=0.01" "fedyogi server_lr=0.01" "median" "trimmed-mean trim_fraction=0.2"; do
    set -- $spec
    name="$1"; shift
    sets=(--set "strategy.name=$name")
    for kv in "$@"; do sets+=(--set "strategy.$kv"); done
    TANDEM_THREADS=1 "$TANDEM" run base.toml --set federation.transport=inproc \
      --set name="s-$name" --set federation.clients=5 --set federation.partition=iid \
      "${sets[@]}" > "run-$name.out" 2>&1 || fail "$name: tandem run failed: $(tail -3 "run-$name.out")"
    first="$(metric "runs/s-$name" 0 val_loss)"; last="$(metric "runs/s-$name" 3 val_loss)"
    /usr/bin/python3 -c "import sys; sys.exit(0 if $last < $first - 0.05 else 1)" ||
      fail "$name: held-out loss did not fall: $first -> $last"
    grep -q "\"strategy\": \"$name\"" "runs/s-$name/summary.json" || fail "$name: summary names another strategy"
  done
  ;;
tcp-curve)
  TANDEM_THREADS=1 "$TANDEM" run base.toml --set federation.transport=tcp --set federation.rounds=2 \
    > run.out 2>&1 || fail "tandem run over tcp failed: $(tail -5 run.out)"
  [ "$(rounds_done runs/fed)" -eq 2 ] || fail "expected 2 rounds"
  grep -q "CURVE" runs/fed/coordinator.log || fail "the coordinator did not use CURVE"
  [ -f runs/fed/keys/allow-list.txt ] || fail "tandem run made no keys"
  [ "$(stat -c %a runs/fed/keys/client-0.key)" = "600" ] || fail "a secret key is readable by others"
  ;;
kill-client)
  # A client SIGKILLed mid-round: the round completes with the other two (min_results = 2);
  # the client restarted rejoins and takes part again.
  start_coordinator k --set federation.min_results=2 --set federation.rounds=4 \
    --set client.local_steps=400
  await_endpoint coord-k.out
  for k in 0 1 2; do start_client "$k" "$ep" --set federation.min_results=2; done
  wait_for 60 "round 1's tasks" grep -q "task 1 (fedavg.train) sent" runs/fed/coordinator.log
  sleep 0.5
  kill -9 "${CLIENT_PID[2]}"
  wait_for 60 "round 1 to complete" has_rounds runs/fed 1
  [ "$(metric runs/fed 1 aborted)" = "" ] || fail "round 1 was aborted"
  [ "$(metric runs/fed 1 results)" = "2.0" ] || fail "round 1 should have 2 results, has $(metric runs/fed 1 results)"
  start_client 2 "$ep"
  wait_for 60 "the run to finish" has_rounds runs/fed 4
  wait "$COORD_PID" || fail "the coordinator failed"
  [ "$(grep -c "client client-2 joined" runs/fed/coordinator.log)" -ge 2 ] || fail "no rejoin logged"
  [ "$(metric runs/fed 2 results)" = "3.0" ] || fail "the restarted client did not take part in round 2"
  ;;
resume)
  # Uninterrupted reference run.
  start_coordinator a --set name=ref --set federation.rounds=4 --set client.local_steps=300
  await_endpoint coord-a.out
  for k in 0 1 2; do start_client "$k" "$ep" --set name=ref; done
  wait "$COORD_PID" || fail "reference coordinator failed"
  # The same run, its coordinator SIGKILLed during round 3 and restarted with --resume.
  start_coordinator b --set name=cut --set federation.rounds=4 --set client.local_steps=300
  await_endpoint coord-b.out
  for k in 0 1 2; do start_client "$k" "$ep" --set name=cut; done
  wait_for 120 "round 2" has_rounds runs/cut 2
  wait_for 60 "round 3's task" grep -q "round 3: task" runs/cut/coordinator.log
  kill -9 "$COORD_PID"
  wait "$COORD_PID" 2>/dev/null || true
  "$TANDEM" coordinator base.toml --set name=cut --set federation.rounds=4 \
    --set client.local_steps=300 --resume \
    --bind "$ep" > coord-c.out 2>&1 &
  COORD_PID=$!; PIDS+=($COORD_PID)
  wait "$COORD_PID" || fail "resumed coordinator failed: $(tail -5 coord-c.out)"
  grep -q "resumed from" runs/cut/coordinator.log || fail "the coordinator did not resume"
  [ "$(rounds_done runs/cut)" -eq 4 ] || fail "metrics.jsonl should hold rounds 1-4 once each"
  cmp runs/ref/checkpoints/model.safetensors runs/cut/checkpoints/model.safetensors ||
    fail "the resumed run's model differs from the uninterrupted run's"
  ;;
allow-list)
  # CURVE over tcp: a client whose key is not on the allow-list never joins; the others finish.
  "$TANDEM" keygen --out keys --clients 3 > /dev/null
  "$TANDEM" keygen --out stranger --clients 3 > /dev/null
  cp keys/coordinator.pub stranger/coordinator.pub
  start_coordinator z --set federation.transport=tcp --set federation.rounds=2 \
    --set federation.wait_for_clients_s=60 --keys keys --bind tcp://127.0.0.1:0
  await_endpoint coord-z.out
  start_client 2 "$ep" --set federation.transport=tcp --keys stranger --set client.give_up_s=4
  stranger_pid="${CLIENT_PID[2]}"
  sleep 2
  grep -q "client-2 joined" runs/fed/coordinator.log && fail "a client with an unknown key joined"
  wait_for 10 "the refusal in the coordinator's log" grep -q "not on the allow-list" runs/fed/coordinator.log
  start_client 0 "$ep" --set federation.transport=tcp --keys keys
  start_client 1 "$ep" --set federation.transport=tcp --keys keys
  if wait "$stranger_pid"; then fail "the stranger's client should give up with an error"; fi
  start_client 2 "$ep" --set federation.transport=tcp --keys keys
  wait "$COORD_PID" || fail "coordinator failed: $(tail -5 coord-z.out)"
  [ "$(rounds_done runs/fed)" -eq 2 ] || fail "the legitimate clients did not finish the run"
  ;;
straggler)
  # A client stopped (SIGSTOP) during round 1 is past the deadline: the round closes with the
  # other two; resumed after the deadline, its late result is dropped and the run goes on.
  start_coordinator s --set federation.min_results=2 --set federation.round_deadline_s=6 \
    --set federation.peer_timeout_ms=30000 --set client.local_steps=200
  await_endpoint coord-s.out
  for k in 0 1 2; do start_client "$k" "$ep" --set federation.peer_timeout_ms=30000; done
  wait_for 60 "round 1's tasks" grep -q "task 1 (fedavg.train) sent" runs/fed/coordinator.log
  kill -STOP "${CLIENT_PID[2]}"
  start=$SECONDS
  wait_for 30 "round 1 to close at its deadline" has_rounds runs/fed 1
  [ $((SECONDS - start)) -le 15 ] || fail "round 1 took too long to close"
  [ "$(metric runs/fed 1 results)" = "2.0" ] || fail "round 1 should have 2 results"
  kill -CONT "${CLIENT_PID[2]}"
  wait "$COORD_PID" || fail "coordinator failed"
  [ "$(rounds_done runs/fed)" -eq 3 ] || fail "the run did not finish its rounds"
  grep -Eq "late result|stale|missed task" runs/fed/coordinator.log || fail "nothing logged about the straggler"
  ;;
private)
  # Secure aggregation alone changes nothing but what the coordinator sees: in a 2^64 ring at
  # 2^-32 (RunningSum's own format) the run's models are bit for bit those of the run without it.
  TANDEM_THREADS=1 "$TANDEM" run base.toml --set name=clear > clear.out 2>&1 ||
    fail "the run without secure aggregation failed: $(tail -5 clear.out)"
  TANDEM_THREADS=1 "$TANDEM" run base.toml --set name=masked --set privacy.secagg.enabled=true \
    --set privacy.secagg.threshold=2 --set privacy.secagg.dropout_rate=0.3 > masked.out 2>&1 ||
    fail "the run with secure aggregation failed: $(tail -5 masked.out)"
  for r in 1 2 3; do
    [ -n "$(metric runs/clear $r val_loss)" ] || fail "no held-out loss in round $r"
    [ "$(metric runs/clear $r val_loss)" = "$(metric runs/masked $r val_loss)" ] ||
      fail "round $r: $(metric runs/clear $r val_loss) without, $(metric runs/masked $r val_loss) with secure aggregation"
  done
  cmp -s runs/clear/checkpoints/model.safetensors runs/masked/checkpoints/model.safetensors ||
    fail "the final models differ"
  # DP (distributed noise) over secure aggregation with real processes: every round runs the
  # four secure-aggregation steps, ε in the metrics is what `tandem privacy epsilon` says for the
  # run's (q, σ, rounds, δ), and a budget stops the run before the round that would exceed it.
  cat >> base.toml <<'EOF2'
[privacy.dp]
enabled = true
noise_multiplier = 0.7
clip_norm = 0.5
noise = "distributed"
sampling = "fixed"
[privacy.secagg]
enabled = true
threshold = 2
dropout_rate = 0.3
EOF2
  TANDEM_THREADS=1 "$TANDEM" run base.toml --set federation.min_results=2 > run.out 2>&1 ||
    fail "tandem run failed: $(tail -5 run.out)"
  [ "$(rounds_done runs/fed)" -eq 3 ] || fail "expected 3 rounds"
  for step in advertise share mask unmask; do
    [ "$(grep -c "(secagg.$step) sent" runs/fed/coordinator.log)" -eq 3 ] ||
      fail "secagg.$step did not run once per round"
  done
  [ "$(metric runs/fed 3 secagg_survivors)" = "3.0" ] || fail "round 3 did not sum 3 masked inputs"
  want="$("$TANDEM" privacy epsilon --q 1 --sigma 0.7 --steps 3 --delta 1e-5 --json |
          /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["epsilon"])')"
  got="$(metric runs/fed 3 epsilon)"
  /usr/bin/python3 -c "import sys; sys.exit(0 if abs($got - $want) <= 1e-9 * $want else 1)" ||
    fail "epsilon in the metrics ($got) is not the accountant's ($want)"
  grep -q "privacy spent: epsilon" run.out || fail "the summary does not say what was spent"
  # A budget between ε(2 rounds) and ε(3 rounds).
  e2="$("$TANDEM" privacy epsilon --q 1 --sigma 0.7 --steps 2 --delta 1e-5 --json |
        /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["epsilon"])')"
  budget="$(/usr/bin/python3 -c "print(($e2 + $want) / 2)")"
  TANDEM_THREADS=1 "$TANDEM" run base.toml --set name=budget --set federation.min_results=2 \
    --set privacy.dp.epsilon_budget="$budget" > budget.out 2>&1 ||
    fail "the budgeted run failed: $(tail -5 budget.out)"
  [ "$(rounds_done runs/budget)" -eq 2 ] || fail "the budgeted run did not stop after 2 rounds"
  grep -q "stopped early: the privacy budget" budget.out || fail "the early stop was not explained"
  ;;
distill-down)
  # The LLM-to-SLM direction: a teacher (here a briefly trained 3-layer slm-micro; the
  # experiments use an llm preset) sends top-k targets on public windows with every round's training task. The
  # clients' distillation loss and the held-out loss must fall over two rounds on a fixed seed.
  public_llm
  grep -v public_categories llm.toml > no-public.toml
  if "$TANDEM" train no-public.toml > no-public.out 2>&1; then fail "train.on = public trained without a public split"; fi
  grep -q "split is empty" no-public.out || fail "no clear error for an empty public split: $(tail -2 no-public.out)"
  cat >> base.toml <<'EOF2'
[algorithm]
name = "distill-down"
[distill-down]
teacher = "runs/llm/checkpoints/model.safetensors"
top_k = 8
temperature = 2.0
windows = 8
EOF2
  TANDEM_THREADS=1 "$TANDEM" run base.toml --set federation.rounds=2 > run.out 2>&1 ||
    fail "tandem run failed: $(tail -5 run.out)"
  [ "$(rounds_done runs/fed)" -eq 2 ] || fail "expected 2 rounds"
  [ "$(grep -c '(distill.train) sent' runs/fed/coordinator.log)" -eq 2 ] || fail "no distill.train tasks"
  kd1="$(metric runs/fed 1 kd_kl)"; kd2="$(metric runs/fed 2 kd_kl)"
  [ -n "$kd1" ] && [ -n "$kd2" ] || fail "no distillation loss in the metrics"
  /usr/bin/python3 -c "import sys; sys.exit(0 if $kd2 < $kd1 else 1)" ||
    fail "the distillation KL did not fall: $kd1 -> $kd2"
  first="$(metric runs/fed 0 val_loss)"; last="$(metric runs/fed 2 val_loss)"
  /usr/bin/python3 -c "import sys; sys.exit(0 if $last < $first - 0.05 else 1)" ||
    fail "held-out loss did not fall: $first -> $last"
  # 8 windows of 64 positions at k = 8: 52 bytes a position, a twentieth of dense f32 logits.
  bytes="$(metric runs/fed 1 kd_targets_bytes)"
  /usr/bin/python3 -c "import sys; sys.exit(0 if 0 < $bytes < 8 * 64 * 256 * 4 / 10 else 1)" ||
    fail "top-k targets take $bytes bytes"
  # The same with SLMs that stay local: the targets come down, nothing but metrics goes up, and
  # the clients' own SLMs learn (their distillation KL and own held-out loss fall).
  if "$TANDEM" run base.toml --set name=local --set distill-down.slms=local \
      --set privacy.secagg.enabled=true --set privacy.secagg.threshold=2 > local-private.out 2>&1; then
    fail "local SLMs ran with [privacy] on"
  fi
  grep -q "nothing to protect" local-private.out || fail "no clear error: $(tail -2 local-private.out)"
  TANDEM_THREADS=1 "$TANDEM" run base.toml --set name=local --set federation.rounds=2 \
    --set distill-down.slms=local --set eval.clients=true > local.out 2>&1 ||
    fail "local-SLM run failed: $(tail -5 local.out)"
  [ "$(grep -c '(distill.mutual) sent' runs/local/coordinator.log)" -eq 2 ] || fail "no distill.mutual tasks"
  for key in kd_kl slm_own_val_loss; do
    a="$(metric runs/local 1 $key)"; b="$(metric runs/local 2 $key)"
    [ -n "$a" ] && [ -n "$b" ] || fail "local SLMs: no $key"
    /usr/bin/python3 -c "import sys; sys.exit(0 if $b < $a else 1)" || fail "local SLMs: $key did not fall: $a -> $b"
  done
  up="$(metric runs/local 1 bytes_up.distill.mutual)"
  /usr/bin/python3 -c "import sys; sys.exit(0 if 0 < $up < 4 * 4096 else 1)" ||
    fail "local SLMs uploaded $up bytes: more than their metrics"
  [ ! -e runs/local/checkpoints/model.safetensors ] || fail "a local-SLM run saved a global model"
  ;;
distill-up)
  # The SLM-to-LLM direction (FedDF): clients start their own SLMs from the public checkpoint,
  # train them on their private categories and upload their predictions on public windows; the
  # coordinator distils its LLM into their ensemble. Over two rounds on a fixed seed the LLM's
  # distillation loss on the round's windows falls, and the upload is a contribution (secure
  # aggregation on here, so only the sum is seen).
  public_llm_and_slm
  cat >> base.toml <<'EOF2'
[algorithm]
name = "distill-up"
[distill-up]
llm = "runs/llm/checkpoints/model.safetensors"
windows = 4
server_steps = 6
server_batch = 2
server_lr = 1e-3
[privacy.secagg]
enabled = true
threshold = 2
dropout_rate = 0.3
modulus_bits = 64
fraction_bits = 32
EOF2
  TANDEM_THREADS=1 "$TANDEM" run base.toml --set federation.rounds=2 > run.out 2>&1 ||
    fail "tandem run failed: $(tail -5 run.out)"
  [ "$(rounds_done runs/fed)" -eq 2 ] || fail "expected 2 rounds"
  [ "$(grep -c '(distill.up) sent' runs/fed/coordinator.log)" -eq 2 ] || fail "no distill.up tasks"
  [ "$(metric runs/fed 2 secagg_survivors)" = "3.0" ] || fail "the predictions did not go through secure aggregation"
  for r in 1 2; do
    a="$(metric runs/fed $r llm_kd_loss_before)"; b="$(metric runs/fed $r llm_kd_loss_after)"
    [ -n "$a" ] && [ -n "$b" ] || fail "no LLM distillation loss in round $r"
    /usr/bin/python3 -c "import sys; sys.exit(0 if $b < $a else 1)" ||
      fail "round $r: the LLM's distillation loss did not fall: $a -> $b"
  done
  [ -n "$(metric runs/fed 2 val_loss)" ] || fail "no held-out loss of the LLM"
  ;;
fedmkt)
  # Both directions every round, with FedMKT's per-position choice of the lowest-CE client: the
  # clients distil from the LLM (their KL is reported) and the LLM from the chosen predictions
  # (its loss on the round's windows falls). That choice needs individual uploads, so asking for
  # it with secure aggregation on is refused.
  public_llm_and_slm
  cat >> base.toml <<'EOF2'
[algorithm]
name = "fedmkt"
[fedmkt]
llm = "runs/llm/checkpoints/model.safetensors"
windows = 4
top_k = 8
server_steps = 6
server_batch = 2
server_lr = 1e-3
selection = "min-ce"
EOF2
  TANDEM_THREADS=1 "$TANDEM" run base.toml --set federation.rounds=2 --set eval.clients=true \
    > run.out 2>&1 || fail "tandem run failed: $(tail -5 run.out)"
  [ "$(grep -c '(distill.mutual) sent' runs/fed/coordinator.log)" -eq 2 ] || fail "no distill.mutual tasks"
  # eval.clients: the clients' own SLMs on their own and on all private categories.
  for key in slm_own_val_loss slm_all_val_loss; do
    v="$(metric runs/fed 2 $key)"
    /usr/bin/python3 -c "import sys; sys.exit(0 if 0 < $v < 20 else 1)" || fail "round 2: $key is '$v'"
  done
  for r in 1 2; do
    [ -n "$(metric runs/fed $r kd_kl)" ] || fail "round $r: no client distillation KL"
    a="$(metric runs/fed $r llm_kd_loss_before)"; b="$(metric runs/fed $r llm_kd_loss_after)"
    /usr/bin/python3 -c "import sys; sys.exit(0 if $b < $a else 1)" ||
      fail "round $r: the LLM's distillation loss did not fall: $a -> $b"
  done
  if "$TANDEM" coordinator base.toml --set name=refused --set privacy.secagg.enabled=true \
       --set privacy.secagg.threshold=2 > refused.out 2>&1; then
    fail "min-ce selection was accepted with secure aggregation"
  fi
  grep -q "min-ce" refused.out || fail "no clear error: $(tail -2 refused.out)"
  ;;
fedcollm)
  # Clients train LoRA adapters on the shared SLM; the coordinator averages them and distils both
  # ways with its LLM on public windows. Both distillations lower their loss every round, and the
  # uploads are adapters only: a small fraction of what goes down. The clients then score the
  # stepped SLM, adapters and all, on their own categories (eval.clients).
  public_llm_and_slm
  fedcollm_section runs/llm
  TANDEM_THREADS=1 "$TANDEM" run base.toml --set federation.rounds=2 --set eval.clients=true \
    > run.out 2>&1 || fail "tandem run failed: $(tail -5 run.out)"
  [ "$(grep -c '(fedcollm.train) sent' runs/fed/coordinator.log)" -eq 2 ] || fail "no fedcollm.train tasks"
  [ "$(grep -c '(fedcollm.eval) sent' runs/fed/coordinator.log)" -eq 2 ] || fail "no fedcollm.eval tasks"
  for r in 1 2; do
    [ -n "$(metric runs/fed $r client_val_loss)" ] || fail "round $r: no client evaluation"
  done
  for r in 1 2; do
    for side in slm llm; do
      a="$(metric runs/fed $r ${side}_kd_loss_before)"; b="$(metric runs/fed $r ${side}_kd_loss_after)"
      /usr/bin/python3 -c "import sys; sys.exit(0 if $b < $a else 1)" ||
        fail "round $r: the $side's distillation loss did not fall: $a -> $b"
    done
  done
  [ -n "$(metric runs/fed 2 llm_val_loss)" ] || fail "no held-out loss of the LLM"
  up="$(metric runs/fed 1 bytes_up)"; down="$(metric runs/fed 1 bytes_down)"
  /usr/bin/python3 -c "import sys; sys.exit(0 if $up < 0.25 * $down else 1)" ||
    fail "uploads are not adapter-sized: $up up against $down down"
  # Every model it trains is a file of its own: the LLM, and the SLM's base with its adapters in a
  # file --lora takes; evaluated, they give the run's last held-out losses.
  ckpt=runs/fed/checkpoints
  "$TANDEM" eval base.toml --checkpoint $ckpt/llm.safetensors > llm-eval.out 2>&1 ||
    fail "the LLM file does not evaluate: $(tail -2 llm-eval.out)"
  "$TANDEM" eval base.toml --max-tokens 4096 --checkpoint $ckpt/model.safetensors \
    --lora $ckpt/model.lora.safetensors \
    > slm-eval.out 2>&1 || fail "the SLM with its adapters does not evaluate: $(tail -2 slm-eval.out)"
  /usr/bin/python3 - "$(metric runs/fed 2 val_loss)" slm-eval.out <<'EOF2' || fail "the saved SLM is not the run's: $(cat slm-eval.out)"
import sys
want = float(sys.argv[1])
for line in open(sys.argv[2]):
    if line.startswith("validation"):
        sys.exit(0 if abs(float(line.split()[1]) - want) < 2e-3 else 1)
sys.exit(1)
EOF2
  ;;
heterogeneous)
  # Clients of different architectures (slm-micro and slm-tiny, each started from its own public
  # checkpoint) in one distill-up run: each is sent its own architecture's task, all predict on
  # windows of the shorter context, and the LLM distils from all of them.
  public_llm_and_slm
  sed -i '/^init_checkpoint = /d' base.toml
  "$TANDEM" train llm.toml --set name=tiny --set model.preset=slm-tiny --set model.n_layer=4 \
    --set train.steps=20 > tiny.out 2>&1 || fail "slm-tiny training failed: $(tail -5 tiny.out)"
  cat >> base.toml <<'EOF2'
[algorithm]
name = "distill-up"
[distill-up]
llm = "runs/llm/checkpoints/model.safetensors"
windows = 4
server_steps = 6
server_batch = 2
server_lr = 1e-4
EOF2
  sed -i 's/^partition = "by-category"$/partition = "by-category"\nclient_models = ["slm-micro", "slm-tiny"]\nclient_init_checkpoints = ["runs\/slm\/checkpoints\/model.safetensors", "runs\/tiny\/checkpoints\/model.safetensors"]/' base.toml
  TANDEM_THREADS=1 "$TANDEM" run base.toml --set federation.rounds=2 > run.out 2>&1 ||
    fail "tandem run failed: $(tail -5 run.out)"
  for r in 1 2; do
    [ "$(metric runs/fed $r results)" = "3.0" ] || fail "round $r: not every architecture answered"
    a="$(metric runs/fed $r llm_kd_loss_before)"; b="$(metric runs/fed $r llm_kd_loss_after)"
    /usr/bin/python3 -c "import sys; sys.exit(0 if $b < $a else 1)" ||
      fail "round $r: the LLM's distillation loss did not fall: $a -> $b"
  done
  # fedavg averages weights within each architecture (heterogeneous-fedavg), which the privacy
  # pipeline's one sum over the cohort cannot do.
  if "$TANDEM" coordinator base.toml --set name=refused --set algorithm.name=fedavg \
       --set privacy.secagg.enabled=true --set privacy.secagg.threshold=2 > refused.out 2>&1; then
    fail "client_models was accepted for fedavg with secure aggregation"
  fi
  grep -q "client_models" refused.out || fail "no clear error: $(tail -2 refused.out)"
  ;;
heterogeneous-fedavg)
  # Clients of two architectures under fedavg: each architecture's clients form a group with its
  # own global model, averaged among them only. Both groups answer every round, each group's
  # held-out loss falls, and each group's model is checkpointed. Then one round each of
  # distill-down (both groups are sent the one teacher's targets on windows of the shorter
  # context) and fedcollm (both distil with one LLM).
  sed -i 's/^clients = 3$/clients = 4/' base.toml
  sed -i 's/^partition = "by-category"$/partition = "by-category"\nclient_models = ["slm-micro", "slm-tiny"]/' base.toml
  TANDEM_THREADS=1 "$TANDEM" run base.toml --set federation.rounds=2 > run.out 2>&1 ||
    fail "tandem run failed: $(tail -5 run.out)"
  for group in slm-micro slm-tiny; do
    for r in 1 2; do
      [ "$(metric runs/fed $r results.$group)" = "2.0" ] || fail "round $r: group $group did not get 2 results"
    done
    first="$(metric runs/fed 0 val_loss.$group)"; last="$(metric runs/fed 2 val_loss.$group)"
    [ -n "$first" ] && [ -n "$last" ] || fail "no held-out loss of group $group"
    /usr/bin/python3 -c "import sys; sys.exit(0 if $last < $first - 0.05 else 1)" ||
      fail "group $group: held-out loss did not fall: $first -> $last"
    [ -f runs/fed/checkpoints/model.$group.safetensors ] || fail "no checkpoint of group $group"
  done
  grep -q "group slm-tiny" runs/fed/coordinator.log || fail "no group in the coordinator's log"
  public_llm
  cat >> base.toml <<'EOF2'
[algorithm]
name = "distill-down"
[distill-down]
teacher = "runs/llm/checkpoints/model.safetensors"
windows = 4
top_k = 8
EOF2
  TANDEM_THREADS=1 "$TANDEM" run base.toml --set name=down --set federation.rounds=1 > down.out 2>&1 ||
    fail "distill-down run failed: $(tail -5 down.out)"
  for group in slm-micro slm-tiny; do
    [ "$(metric runs/down 1 results.$group)" = "2.0" ] || fail "distill-down: group $group did not get 2 results"
    [ -n "$(metric runs/down 1 kd_kl.$group)" ] || fail "distill-down: no distillation KL of group $group"
  done
  # fedcollm: every group's SLM distils from and into one LLM (here with slm-tiny's context), which
  # is evaluated once a round and saved once.
  "$TANDEM" train llm.toml --set name=llm128 --set model.context=128 > llm128.out 2>&1 ||
    fail "LLM training failed: $(tail -5 llm128.out)"
  sed -i '/^\[algorithm\]$/,$d' base.toml
  fedcollm_section runs/llm128
  TANDEM_THREADS=1 "$TANDEM" run base.toml --set name=collm --set federation.rounds=1 > collm.out 2>&1 ||
    fail "fedcollm run failed: $(tail -5 collm.out)"
  for group in slm-micro slm-tiny; do
    [ "$(metric runs/collm 1 results.$group)" = "2.0" ] || fail "fedcollm: group $group did not get 2 results"
    a="$(metric runs/collm 1 slm_kd_loss_before.$group)"; b="$(metric runs/collm 1 slm_kd_loss_after.$group)"
    /usr/bin/python3 -c "import sys; sys.exit(0 if $b < $a else 1)" ||
      fail "fedcollm: group $group's SLM distillation loss did not fall: $a -> $b"
  done
  [ -n "$(metric runs/collm 1 llm_val_loss)" ] || fail "fedcollm: no held-out loss of the LLM"
  [ -z "$(metric runs/collm 1 llm_val_loss.slm-tiny)" ] || fail "fedcollm: the LLM evaluated per group"
  /usr/bin/python3 - runs/collm/checkpoints/coordinator.safetensors <<'EOF2' || fail "fedcollm: the LLM is not saved exactly once"
import json, struct, sys
with open(sys.argv[1], "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    names = [k for k in json.loads(f.read(n)) if k.endswith("llm.params")]
sys.exit(0 if names == ["llm.params"] else 1)
EOF2
  ;;
private-resume)
  # A private run whose coordinator is SIGKILLed after round 2's checkpoint and restarted with
  # --resume ends where the uninterrupted run does. Secure aggregation alone: the final model is
  # byte for byte the uninterrupted run's (fresh keys every round, masks that cancel exactly).
  # With DP (distributed noise) on top: the accountant resumes, so ε is the uninterrupted run's,
  # and the model is the uninterrupted run's byte for byte too: every noise draw is a function of
  # a key and (the run's noise id, round, task), the noise id survives in the checkpoint and the
  # clients keep their keys, so round 3 redone after the kill adds the noise it added before
  # (docs/privacy.md, "Restarts"). TANDEM_NOISE_KEY gives both runs the same keys, which a real
  # run draws from the operating system; the resumed run must match without any key of its own.
  cat >> base.toml <<'EOF2'
[privacy.secagg]
enabled = true
threshold = 2
dropout_rate = 0.3
EOF2
  # private_pair NAME: NAME-ref uninterrupted, then NAME-cut killed after round 2 and resumed.
  private_pair() {
    local ref="$1-ref" cut="$1-cut" ep
    # Rounds long enough (local_steps) that the kill lands before the run ends.
    start_coordinator "$ref" --set name="$ref" --set federation.rounds=4 --set client.local_steps=50
    await_endpoint "coord-$ref.out"
    for k in 0 1 2; do start_client "$k" "$ep" --set name="$ref"; done
    wait "$COORD_PID" || fail "$ref: coordinator failed: $(tail -5 "coord-$ref.out")"
    for k in 0 1 2; do wait "${CLIENT_PID[$k]}" || fail "$ref: client $k failed"; done
    start_coordinator "$cut" --set name="$cut" --set federation.rounds=4 --set client.local_steps=50
    await_endpoint "coord-$cut.out"
    for k in 0 1 2; do start_client "$k" "$ep" --set name="$cut"; done
    # Round 3's first task goes out after round 2's checkpoint is written.
    wait_for 60 "$cut: round 3's task" grep -q "round 3: task" "runs/$cut/coordinator.log"
    kill -9 "$COORD_PID"
    wait "$COORD_PID" 2>/dev/null || true
    [ ! -e "runs/$cut/summary.json" ] || fail "$cut: the run ended before the kill"
    "$TANDEM" coordinator base.toml --set name="$cut" --set federation.rounds=4 \
      --set client.local_steps=50 --resume \
      --bind "$ep" > "coord-$cut-resumed.out" 2>&1 &
    COORD_PID=$!; PIDS+=($COORD_PID)
    wait "$COORD_PID" || fail "$cut: resumed coordinator failed: $(tail -5 "coord-$cut-resumed.out")"
    for k in 0 1 2; do wait "${CLIENT_PID[$k]}" || fail "$cut: client $k failed"; done
    grep -Eq "resumed from .* before round [34]" "runs/$cut/coordinator.log" ||
      fail "$cut: the coordinator did not resume after round 2 or 3"
    [ "$(rounds_done "runs/$cut")" -eq 4 ] || fail "$cut: metrics.jsonl should hold rounds 1-4 once each"
    [ "$(metric "runs/$cut" 4 secagg_survivors)" = "3.0" ] || fail "$cut: round 4 did not sum 3 masked inputs"
    ! grep -q "refused to" client*.out || fail "$cut: a client refused a replayed round"
  }
  SECONDS=0
  private_pair masked
  sha_ref="$(sha256sum < runs/masked-ref/checkpoints/model.safetensors)"
  sha_cut="$(sha256sum < runs/masked-cut/checkpoints/model.safetensors)"
  [ "$sha_ref" = "$sha_cut" ] ||
    fail "secure aggregation: the resumed run's model differs from the uninterrupted run's"
  cat >> base.toml <<'EOF2'
[privacy.dp]
enabled = true
noise_multiplier = 0.7
clip_norm = 0.5
noise = "distributed"
sampling = "fixed"
EOF2
  # Reproducible keys for both runs: the coordinator's, the noise run id, and each client's.
  export TANDEM_NOISE_KEY=3f1e6d2c5b4a39281706f5e4d3c2b1a00f1e2d3c4b5a69788796a5b4c3d2e1f0
  rm -f client*.out
  private_pair dp
  unset TANDEM_NOISE_KEY
  cmp runs/dp-ref/checkpoints/model.safetensors runs/dp-cut/checkpoints/model.safetensors ||
    fail "DP + secure aggregation: the resumed run's model differs from the uninterrupted run's"
  grep -q "noise derived from TANDEM_NOISE_KEY" runs/dp-cut/coordinator.log client*.out ||
    fail "the runs did not take their noise keys from TANDEM_NOISE_KEY"
  e_ref="$(/usr/bin/python3 -c 'import json; print(repr(json.load(open("runs/dp-ref/summary.json"))["epsilon"]))')"
  e_cut="$(/usr/bin/python3 -c 'import json; print(repr(json.load(open("runs/dp-cut/summary.json"))["epsilon"]))')"
  [ "$e_ref" = "$e_cut" ] || fail "epsilon: $e_ref uninterrupted, $e_cut resumed"
  want="$("$TANDEM" privacy epsilon --q 1 --sigma 0.7 --steps 4 --delta 1e-5 --json |
          /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["epsilon"])')"
  /usr/bin/python3 -c "import sys; sys.exit(0 if abs($e_cut - $want) <= 1e-9 * $want else 1)" ||
    fail "epsilon after the resume ($e_cut) is not the accountant's for 4 rounds ($want)"
  for r in 1 2 3 4; do
    [ "$(metric runs/dp-ref $r epsilon)" = "$(metric runs/dp-cut $r epsilon)" ] ||
      fail "round $r: epsilon $(metric runs/dp-ref $r epsilon) uninterrupted, $(metric runs/dp-cut $r epsilon) resumed"
  done
  echo "private-resume: four runs in ${SECONDS} s"
  ;;
tcp-default-curve)
  # Secure by default: CURVE follows the endpoint, not federation.transport. base.toml says ipc
  # and nothing about CURVE, yet a coordinator bound to tcp:// (what docs/cluster.md and the SLURM
  # script do) encrypts and admits only the allow-listed keys. Without keys neither side starts,
  # and the error says how to make them; a client's unresolvable host is an error naming it.
  if "$TANDEM" coordinator base.toml --set name=nokeys --bind tcp://127.0.0.1:0 --keys nokeys \
       > nokeys-coord.out 2>&1; then
    fail "a coordinator bound to tcp:// without keys started"
  fi
  grep -q "tandem keygen --out nokeys --clients N" nokeys-coord.out ||
    fail "the coordinator's error does not say how to make keys: $(tail -3 nokeys-coord.out)"
  grep -q "federation.curve = false" nokeys-coord.out ||
    fail "the coordinator's error does not say how to opt out: $(tail -3 nokeys-coord.out)"
  if TANDEM_THREADS=1 "$TANDEM" client base.toml --id 0 --connect tcp://127.0.0.1:9 --keys nokeys \
       --set client.give_up_s=30 > nokeys-client.out 2>&1; then
    fail "a client connecting to tcp:// without keys started"
  fi
  grep -q "client-0.key" nokeys-client.out && grep -q "tandem keygen" nokeys-client.out ||
    fail "the client's error does not say which keys it needs: $(tail -3 nokeys-client.out)"
  "$TANDEM" keygen --out keys --clients 3 > /dev/null
  # give_up_s bounds the old behaviour (retrying as if the coordinator were lost).
  if TANDEM_THREADS=1 "$TANDEM" client base.toml --id 0 --connect tcp://no-such-node.invalid:5555 \
       --keys keys --set client.give_up_s=30 > unresolved.out 2>&1; then
    fail "a client whose coordinator's host does not resolve ended without error"
  fi
  grep -q "cannot resolve the coordinator's host 'no-such-node.invalid'" unresolved.out ||
    fail "no error naming the unresolvable host: $(tail -3 unresolved.out)"
  start_coordinator d --bind tcp://127.0.0.1:0 --keys keys --set federation.rounds=2
  await_endpoint coord-d.out
  # A client that opts out of CURVE talks in the clear, is warned, and cannot join.
  start_client 2 "$ep" --set federation.curve=false --set client.give_up_s=3
  clear_pid="${CLIENT_PID[2]}"
  if wait "$clear_pid"; then fail "a client in the clear should give up with an error"; fi
  grep -q "in the clear" client2-*.out || fail "the client in the clear was not warned"
  grep -q "client-2 joined" runs/fed/coordinator.log && fail "a client in the clear joined"
  rm -f client2-*.out
  for k in 0 1 2; do start_client "$k" "$ep" --keys keys; done
  wait "$COORD_PID" || fail "coordinator failed: $(tail -5 coord-d.out)"
  [ "$(rounds_done runs/fed)" -eq 2 ] || fail "the run did not finish its rounds"
  grep -q "CURVE on for tcp://127.0.0.1" runs/fed/coordinator.log ||
    fail "the coordinator bound to tcp:// did not use CURVE"
  for k in 0 1 2; do wait "${CLIENT_PID[$k]}" || fail "client $k failed"; done
  grep -q "CURVE on for $ep" client0-*.out || fail "client 0 did not use CURVE"
  # Opting out on purpose still runs, in the clear, with a warning in the coordinator's log.
  TANDEM_THREADS=1 "$TANDEM" run base.toml --set name=clear --set federation.transport=tcp \
    --set federation.curve=false --set federation.rounds=1 > clear.out 2>&1 ||
    fail "tandem run over tcp with federation.curve = false failed: $(tail -5 clear.out)"
  grep -q "warn.*federation.curve = false.* is in the clear" runs/clear/coordinator.log ||
    fail "no warning that the traffic is in the clear"
  [ ! -e runs/clear/keys ] || fail "keys were made for a run without CURVE"
  ;;
stop-run)
  # Regression: SIGTERM to `tandem run`'s pid alone (what `timeout` or a scheduler sends) killed
  # the launcher and left its client processes running, and a --resume then collided with them.
  # Now the launcher stops every client it started, keeps the last checkpoint, says how to
  # resume (with the same --set overrides) and exits 143; the printed command finishes the run.
  CFG="$WORK/stop-run.toml"  # a unique path: the run's clients are found by it
  cp base.toml "$CFG"
  gone() { ! kill -0 "$1" 2>/dev/null; }
  clients_left() { pgrep -f -- "client $CFG " || true; }
  TANDEM_THREADS=1 "$TANDEM" run "$CFG" --set federation.rounds=4 --set client.local_steps=150 \
    > run.out 2>&1 &
  RUN_PID=$!; PIDS+=($RUN_PID)
  wait_for 120 "round 1's checkpoint" has_rounds runs/fed 1
  [ "$(clients_left | wc -l)" -eq 3 ] || fail "expected 3 client processes, found: $(clients_left)"
  kill -TERM "$RUN_PID"
  wait_for 20 "tandem run to exit after SIGTERM" gone "$RUN_PID"
  rc=0; wait "$RUN_PID" || rc=$?
  left="$(clients_left)"
  if [ -n "$left" ]; then
    for pid in $left; do PIDS+=("$pid"); done
    fail "client processes still running after tandem run exited: $left"
  fi
  [ "$rc" -eq 143 ] || fail "tandem run exited with $rc after SIGTERM, expected 143"
  [ ! -e runs/fed/summary.json ] || fail "the run finished before SIGTERM reached it"
  [ "$(rounds_done runs/fed)" -lt 4 ] || fail "all rounds done before SIGTERM"
  grep -q -- "--resume" run.out || fail "the output does not say how to resume: $(tail -3 run.out)"
  resume="$(sed -n 's/^to continue the run: tandem //p' run.out)"
  [[ "$resume" == *"--set client.local_steps=150"* ]] || fail "the resume command drops the overrides: $resume"
  eval "TANDEM_THREADS=1 \"\$TANDEM\" $resume" > resumed.out 2>&1 &
  RUN_PID=$!; PIDS+=($RUN_PID)
  wait_for 240 "the resumed run to finish" gone "$RUN_PID"
  wait "$RUN_PID" || fail "the resumed run failed: $(tail -5 resumed.out)"
  grep -q "resumed from" runs/fed/coordinator.log || fail "the run did not resume"
  [ "$(rounds_done runs/fed)" -eq 4 ] || fail "metrics.jsonl should hold rounds 1-4 once each"
  /usr/bin/python3 - <<'EOF2' || fail "summary.json: $(cat runs/fed/summary.json)"
import json, sys
s = json.load(open("runs/fed/summary.json"))
sys.exit(0 if s["rounds"] == 4 and s["final_val_loss"] < s["initial_val_loss"] - 0.05 else 1)
EOF2
  [ -z "$(clients_left)" ] || fail "client processes left after the resumed run"
  ;;
dead-client)
  # Regression: after a client process died for good under `tandem run`, every later round
  # waited wait_for_clients_s (here 120 s) for a full cohort. The launcher now tells the
  # coordinator the process exited, and the rounds go on with the two clients left at once.
  # peer_timeout_ms is high so that only the launcher's report can explain a quick run.
  CFG="$WORK/dead-client.toml"
  cp base.toml "$CFG"
  gone() { ! kill -0 "$1" 2>/dev/null; }
  TANDEM_THREADS=1 "$TANDEM" run "$CFG" --set federation.rounds=4 --set federation.min_results=2 \
    --set federation.wait_for_clients_s=120 --set federation.peer_timeout_ms=60000 \
    --set client.local_steps=100 > run.out 2>&1 &
  RUN_PID=$!; PIDS+=($RUN_PID)
  wait_for 60 "round 1's task" grep -q "task 1 (fedavg.train) sent" runs/fed/coordinator.log
  victim="$(pgrep -f -- "client $CFG --id 2 " || true)"
  [ -n "$victim" ] || fail "no process for client 2"
  kill -9 $victim
  start=$SECONDS
  wait_for 110 "the run to finish" gone "$RUN_PID"
  took=$((SECONDS - start))
  wait "$RUN_PID" || fail "tandem run failed: $(tail -5 run.out)"
  [ "$took" -le 60 ] || fail "the rounds after the kill took ${took}s: they waited for the dead client"
  [ "$(rounds_done runs/fed)" -eq 4 ] || fail "expected 4 rounds"
  for r in 2 3 4; do
    [ "$(metric runs/fed $r aborted)" = "" ] || fail "round $r was aborted"
    [ "$(metric runs/fed $r results)" = "2.0" ] || fail "round $r should have 2 results, has $(metric runs/fed $r results)"
  done
  grep -q "client-2's process ended" runs/fed/coordinator.log || fail "the exit was not reported"
  ;;
run-dirs)
  # A run directory is a record: the same name is refused, --resume of a complete run changes
  # nothing, a running coordinator's directory is locked, --overwrite replaces report/ and logs,
  # but only once the new run has begun.
  fp() { md5sum runs/rd/metrics.jsonl runs/rd/config.toml runs/rd/summary.json runs/rd/coordinator.log runs/rd/run.json; }
  TANDEM_THREADS=1 "$TANDEM" run base.toml --set name=rd --set federation.rounds=1 > rd1.out 2>&1 ||
    fail "first run failed: $(tail -3 rd1.out)"
  /usr/bin/python3 - <<'EOF2' || fail "run.json lacks the version or the data fingerprint"
import json
r = json.load(open("runs/rd/run.json"))
assert r["tandem_version"], r
assert len(r["data"]["sha256"]) == 64 and len(r["data"]["files"]) > 10, r
EOF2
  grep -q "^\[resolved\]" runs/rd/config.resolved.toml || fail "no [resolved] table in config.resolved.toml"
  grep -q "'federation.round_deadline_s' = 60" runs/rd/config.resolved.toml || fail "a key the run read is missing from config.resolved.toml"
  grep -q "'strategy.name' = 'fedavg'" runs/rd/config.resolved.toml || fail "a default is missing from config.resolved.toml"
  "$TANDEM" report runs/rd --no-plots | grep -q "tandem version" || fail "tandem report does not show the version"
  mkdir -p runs/rd/report && echo old > runs/rd/report/old.md
  before="$(fp)"
  if "$TANDEM" run base.toml --set name=rd --set federation.rounds=1 > rd2.out 2>&1; then
    fail "a second run of the same name started"
  fi
  grep -q "already holds a run.*--overwrite" rd2.out || fail "the refusal does not name --overwrite: $(cat rd2.out)"
  [ "$(fp)" = "$before" ] || fail "a refused start changed the earlier run"
  if "$TANDEM" run base.toml --set name=rd --set federation.rounds=1 --resume > rd3.out 2>&1; then
    fail "--resume of a complete run did not say so"
  fi
  grep -q "run rd is complete (1 of 1 rounds); nothing to do" rd3.out || fail "unclear message: $(cat rd3.out)"
  [ "$(fp)" = "$before" ] || fail "--resume of a complete run changed it"
  # A coordinator waiting for its clients holds the lock; a second process cannot share the name.
  start_coordinator busy --set name=busy
  wait_for 30 "the coordinator to listen" grep -q "coordinator listening" coord-busy.out
  if "$TANDEM" coordinator base.toml --set name=busy --overwrite > busy2.out 2>&1; then
    fail "two coordinators shared one run directory"
  fi
  grep -q "in use by another tandem process" busy2.out || fail "no lock message: $(cat busy2.out)"
  kill "$COORD_PID"; wait "$COORD_PID" 2>/dev/null || true
  # An --overwrite whose start fails (here: a checkpoint that does not exist) replaces nothing.
  if "$TANDEM" run base.toml --set name=rd --set federation.rounds=1 --overwrite \
      --set model.init_checkpoint=missing.safetensors > rd5.out 2>&1; then
    fail "a run from a missing checkpoint started"
  fi
  [ "$(fp)" = "$before" ] || fail "a failed --overwrite start changed the earlier run: $(tail -3 rd5.out)"
  [ -e runs/rd/report/old.md ] || fail "a failed --overwrite start lost the earlier report/"
  TANDEM_THREADS=1 "$TANDEM" run base.toml --set name=rd --set federation.rounds=1 --overwrite > rd4.out 2>&1 ||
    fail "--overwrite failed: $(tail -3 rd4.out)"
  [ ! -e runs/rd/report ] || fail "--overwrite left the old report/"
  [ "$(rounds_done runs/rd)" -eq 1 ] || fail "the overwritten run has $(rounds_done runs/rd) rounds"
  [ "$(grep -c "run 'rd'" runs/rd/coordinator.log)" -eq 1 ] || fail "coordinator.log was appended to, not replaced"
  ;;
submodel)
  # The global model trained through sub-models: clients 0, 1 and 2 train widths 1, 1/2 and 1/4
  # of it, rolling with the round. In the clear each uploads its own slice; under secure
  # aggregation every upload has the whole model's length, so the coordinator can add them.
  sub() { TANDEM_THREADS=1 "$TANDEM" run base.toml --set algorithm.name=submodel \
            --set 'submodel.width_divisors=[1, 2, 4]' --set submodel.window=rolling \
            --set federation.rounds=2 "$@"; }
  sub --set name=sub > sub.out 2>&1 || fail "the submodel run failed: $(tail -5 sub.out)"
  sub --set name=sub-masked --set privacy.secagg.enabled=true --set privacy.secagg.threshold=2 \
    > sub-masked.out 2>&1 || fail "the submodel run under secure aggregation failed: $(tail -5 sub-masked.out)"
  for run in sub sub-masked; do
    [ "$(rounds_done runs/$run)" -eq 2 ] || fail "$run: $(rounds_done runs/$run) rounds"
    for key in val_loss val_loss_d2 val_loss_d4 uncovered_fraction; do
      [ -n "$(metric runs/$run 2 $key)" ] || fail "$run: round 2 has no $key"
    done
    /usr/bin/python3 -c "import sys; sys.exit(0 if $(metric runs/$run 2 val_loss) < $(metric runs/$run 0 val_loss) else 1)" ||
      fail "$run: the global model did not improve: $(metric runs/$run 0 val_loss) -> $(metric runs/$run 2 val_loss)"
  done
  clear="$(metric runs/sub 1 bytes_up)"; masked="$(metric runs/sub-masked 1 bytes_up)"
  /usr/bin/python3 -c "import sys; sys.exit(0 if $clear < 0.75 * $masked else 1)" ||
    fail "sliced uploads ($clear bytes) are not smaller than whole-length ones ($masked)"
  "$TANDEM" eval base.toml --max-tokens 4096 --checkpoint runs/sub/checkpoints/model.safetensors > sub-eval.out 2>&1 ||
    fail "the trained model does not evaluate: $(tail -2 sub-eval.out)"
  ;;
offsite)
  # A four-block model split into adapters (its bottom and top blocks) and an emulator of the two
  # between them (one kept). offsite sends the emulator once, then adapters only; fedbiot
  # re-aligns the emulator before every round and sends each version, here under secure
  # aggregation. Both improve the full model, and both write it and the emulator as files.
  split() { TANDEM_THREADS=1 "$TANDEM" run base.toml --set model.n_layer=4 --set federation.rounds=2 \
              --set 'data.public_categories=["art", "zippy", "linux"]' "$@"; }
  split --set name=off --set algorithm.name=offsite --set offsite.bottom=1 --set offsite.top=1 \
    > off.out 2>&1 || fail "the offsite run failed: $(tail -5 off.out)"
  split --set name=biot --set algorithm.name=fedbiot --set fedbiot.bottom=1 --set fedbiot.top=1 \
    --set fedbiot.server_steps=2 --set privacy.secagg.enabled=true --set privacy.secagg.threshold=2 \
    > biot.out 2>&1 || fail "the fedbiot run failed: $(tail -5 biot.out)"
  for run in off biot; do
    [ "$(rounds_done runs/$run)" -eq 2 ] || fail "$run: $(rounds_done runs/$run) rounds"
    /usr/bin/python3 -c "import sys; sys.exit(0 if $(metric runs/$run 2 val_loss) < $(metric runs/$run 0 val_loss) else 1)" ||
      fail "$run: the plugged-in model did not improve"
    [ -n "$(metric runs/$run 2 emulator_val_loss)" ] || fail "$run: no emulator_val_loss"
    for f in model emulator; do
      "$TANDEM" eval base.toml --max-tokens 4096 --checkpoint runs/$run/checkpoints/$f.safetensors > $run-$f.out 2>&1 ||
        fail "$run: $f.safetensors does not evaluate: $(tail -2 $run-$f.out)"
    done
  done
  d1="$(metric runs/off 1 bytes_down)"; d2="$(metric runs/off 2 bytes_down)"
  /usr/bin/python3 -c "import sys; sys.exit(0 if $d2 < 0.7 * $d1 else 1)" ||
    fail "offsite sent the emulator again: $d1 then $d2 bytes down"
  [ "$(metric runs/biot 2 emulator_version)" = "2.0" ] || fail "fedbiot did not re-align before round 2"
  /usr/bin/python3 -c "import sys; sys.exit(0 if $(metric runs/biot 2 emulator_kd_loss_after) < $(metric runs/biot 2 emulator_kd_loss_before) else 1)" ||
    fail "fedbiot's re-alignment did not lower its distillation loss"
  ;;
offsite-lora)
  # The same split with LoRA adapters (adapters = "lora"): only the factors on the adapter blocks
  # go up, far fewer bytes than the full blocks; the plugged-in LLM improves and is written as a
  # standalone file (the factors merged in), and the emulator's factors beside it as a file
  # `tandem eval --lora` takes. fedbiot with LoRA too, re-aligning before round 2.
  split() { TANDEM_THREADS=1 "$TANDEM" run base.toml --set model.n_layer=4 --set federation.rounds=2 \
              --set 'data.public_categories=["art", "zippy", "linux"]' "$@"; }
  split --set name=full --set algorithm.name=offsite > full.out 2>&1 ||
    fail "the full-adapter offsite run failed: $(tail -5 full.out)"
  split --set name=off --set algorithm.name=offsite --set offsite.adapters=lora \
    --set offsite.lora.rank=4 > off.out 2>&1 || fail "the LoRA offsite run failed: $(tail -5 off.out)"
  split --set name=biot --set algorithm.name=fedbiot --set fedbiot.adapters=lora \
    --set fedbiot.lora.rank=4 --set fedbiot.server_steps=2 > biot.out 2>&1 ||
    fail "the LoRA fedbiot run failed: $(tail -5 biot.out)"
  for run in off biot; do
    [ "$(rounds_done runs/$run)" -eq 2 ] || fail "$run: $(rounds_done runs/$run) rounds"
    /usr/bin/python3 -c "import sys; sys.exit(0 if $(metric runs/$run 2 val_loss) < $(metric runs/$run 0 val_loss) else 1)" ||
      fail "$run: the plugged-in model did not improve"
    [ -f runs/$run/checkpoints/emulator.lora.safetensors ] || fail "$run: no emulator.lora.safetensors"
    [ ! -f runs/$run/checkpoints/model.lora.safetensors ] || fail "$run: the LLM is not standalone"
    "$TANDEM" eval base.toml --max-tokens 4096 --checkpoint runs/$run/checkpoints/model.safetensors \
      > $run-model.out 2>&1 || fail "$run: model.safetensors does not evaluate: $(tail -2 $run-model.out)"
    "$TANDEM" eval base.toml --max-tokens 4096 --checkpoint runs/$run/checkpoints/emulator.safetensors \
      --lora runs/$run/checkpoints/emulator.lora.safetensors > $run-emulator.out 2>&1 ||
      fail "$run: the emulator with its factors does not evaluate: $(tail -2 $run-emulator.out)"
  done
  cmp -s runs/full/checkpoints/model.safetensors runs/off/checkpoints/model.safetensors &&
    fail "the LoRA run wrote the full-adapter run's model"
  up_full="$(metric runs/full 2 bytes_up)"; up_lora="$(metric runs/off 2 bytes_up)"
  /usr/bin/python3 -c "import sys; sys.exit(0 if $up_lora < 0.2 * $up_full else 1)" ||
    fail "LoRA adapters sent $up_lora bytes up, full ones $up_full"
  [ "$(metric runs/biot 2 emulator_version)" = "2.0" ] || fail "fedbiot did not re-align before round 2"
  ;;
*)
  echo "unknown scenario $SCENARIO" >&2; exit 2 ;;
esac
echo "PASS [$SCENARIO]"
