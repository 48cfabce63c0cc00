#!/usr/bin/env bash
# Sluice beside its peers, in one run on this machine: ../shared/peerbench
# runs Redis and NATS JetStream (memory and durable; saturated, then paced
# at 2,000 jobs/s), then sluice-bench runs Sluice with the same workload
# (one producer with 64 requests unanswered, one consumer with 64 jobs in
# flight, per-job acknowledgement) over each API, and `sluice-bench exec`
# compares exec handlers with raw fork-exec. At the end it prints one table
# and the ratios the README's Performance section states, each with its
# goal.
#
# peerbench's own Sluice adapter uses the unary calls, so Sluice's rows
# come from sluice-bench; both generators stamp each job when it is sent
# and measure enqueue-to-receipt the same way.
#
#   scripts/bench-beside-peers.sh             # RUNS=3 N=100000 PACED_N=10000
#   RUNS=1 N=50000 scripts/bench-beside-peers.sh
#
# Environment: PEERBENCH (../shared/peerbench), WORK (/tmp/sluice-beside-peers),
# N, RUNS, PACED_N, EXEC_N (2000). Everything runs on 127.0.0.1 and stops
# by itself; every run is bounded by the generators' own timeouts.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PEERBENCH=${PEERBENCH:-$ROOT/../shared/peerbench}
WORK=${WORK:-/tmp/sluice-beside-peers}
N=${N:-100000}
RUNS=${RUNS:-3}
PACED_N=${PACED_N:-10000}
EXEC_N=${EXEC_N:-2000}
RATE=2000
export CARGO_INCREMENTAL=0

[ -x "$PEERBENCH/run.sh" ] || { echo "no peerbench at $PEERBENCH (set PEERBENCH)" >&2; exit 1; }
rm -rf "$WORK"
mkdir -p "$WORK/peers"
cargo build --release --quiet -p sluice-bench -p sluice-broker -p sluice-worker
bench=$ROOT/target/release/sluice-bench

echo "== peers: Redis and NATS JetStream (peerbench) ==" >&2
(cd "$PEERBENCH" && WORK="$WORK/peers" N=$N RUNS=$RUNS PACED_N=$PACED_N PACED_RATE=$RATE \
    NATS_DOUBLE_ACK=0 ./run.sh redis nats) >&2

# sluice_run LABEL [sluice-bench load args...]: RUNS runs, one JSON line each.
sluice_run() {
    local label=$1 r out data
    shift
    for ((r = 1; r <= RUNS; r++)); do
        data=""
        if [[ $label == *durable* ]]; then
            data=$(mktemp -d "$WORK/data.XXXXXX")
            set -- "$@" --broker-arg=--data-dir="$data"
        fi
        out=$("$bench" load --json -k 64 -w 64 "$@")
        printf '{"label":"%s","run":%d,"result":%s}\n' "$label" "$r" "$out" >>"$WORK/sluice.jsonl"
        echo "sluice $label run $r: $(echo "$out" | cut -c1-150)..." >&2
        if [ -n "$data" ]; then
            rm -rf "$data"
            # Drop the --broker-arg added above for the next run.
            set -- "${@:1:$#-1}"
        fi
    done
}

echo "== Sluice (sluice-bench) ==" >&2
: >"$WORK/sluice.jsonl"
sluice_run "stream memory" --api stream -n "$N"
sluice_run "stream durable" --api stream -n "$N"
sluice_run "batch memory" --api batch -n "$N"
sluice_run "batch durable" --api batch -n "$N"
sluice_run "unary memory" --api unary -n "$((N / 4))"
sluice_run "paced stream memory" --api stream -n "$PACED_N" --rate "$RATE"
sluice_run "paced stream durable" --api stream -n "$PACED_N" --rate "$RATE"
sluice_run "paced unary memory" --api unary -n "$PACED_N" --rate "$RATE"
"$bench" exec --json -n "$EXEC_N" -r "$RUNS" >"$WORK/exec.json"

python3 - "$WORK" <<'PY'
import glob, json, statistics, sys

work = sys.argv[1]
peers = {}
for path in glob.glob(f"{work}/peers/results-*.jsonl"):
    for line in open(path):
        run = json.loads(line)
        if not run.get("ok"):
            continue
        key = (run["system"], run["mode"], "paced" if run.get("label", "").startswith("paced") else "sat")
        peers.setdefault(key, []).append(run["e2e"])
sluice = {}
for line in open(f"{work}/sluice.jsonl"):
    run = json.loads(line)
    sluice.setdefault(run["label"], []).append(run["result"])

med = statistics.median
def peer(system, mode, kind, field):
    runs = peers.get((system, mode, kind), [])
    if not runs:
        return None
    if field == "rate":
        return med(r["jobs_per_s"] for r in runs)
    return med(r["latency_us"][field] for r in runs)
def ours(label, field):
    runs = sluice.get(label, [])
    if field == "rate":
        return med(r["e2e_jobs_per_s"] for r in runs)
    return med(r["latency_us"][field] for r in runs)

print(f"| system | mode | e2e jobs/s | paced p50 / p99 µs |")
print(f"|---|---|---|---|")
for label, mode in [("stream", "memory"), ("stream", "durable")]:
    print(f"| Sluice, EnqueueStream + Work | {mode} | {ours(f'{label} {mode}', 'rate'):,.0f} | "
          f"{ours(f'paced {label} {mode}', 'p50'):,.0f} / {ours(f'paced {label} {mode}', 'p99'):,.0f} |")
print(f"| Sluice, batched calls | memory | {ours('batch memory', 'rate'):,.0f} | |")
print(f"| Sluice, batched calls | durable | {ours('batch durable', 'rate'):,.0f} | |")
print(f"| Sluice, unary calls | memory | {ours('unary memory', 'rate'):,.0f} | "
      f"{ours('paced unary memory', 'p50'):,.0f} / {ours('paced unary memory', 'p99'):,.0f} |")
names = {"redis": "Redis", "nats": "NATS JetStream"}
for system in ["redis", "nats"]:
    for mode in ["memory", "durable"]:
        rate = peer(system, mode, "sat", "rate")
        p50, p99 = peer(system, mode, "paced", "p50"), peer(system, mode, "paced", "p99")
        if rate is None:
            print(f"| {names[system]} | {mode} | no ok run | |")
            continue
        print(f"| {names[system]} | {mode} | {rate:,.0f} | {p50 or 0:,.0f} / {p99 or 0:,.0f} |")

exec_run = json.load(open(f"{work}/exec.json"))
best_memory = max(filter(None, [peer(s, "memory", "sat", "rate") for s in ["redis", "nats"]]), default=0)
nats_file = peer("nats", "durable", "sat", "rate") or 0
best_p99 = min(filter(None, [peer(s, "memory", "paced", "p99") for s in ["redis", "nats"]]), default=0)
best_p50 = min(filter(None, [peer(s, "memory", "paced", "p50") for s in ["redis", "nats"]]), default=0)
checks = [
    ("stream, memory / best peer, memory", ours("stream memory", "rate") / best_memory if best_memory else 0, ">=", 1.5),
    ("stream, memory / batched calls, memory", ours("stream memory", "rate") / ours("batch memory", "rate"), ">=", 0.85),
    ("stream, durable / NATS file store", ours("stream durable", "rate") / nats_file if nats_file else 0, ">=", 1.0),
    ("paced stream p99 / best peer p99", ours("paced stream memory", "p99") / best_p99 if best_p99 else 0, "<=", 1.0),
    ("paced stream p50 / best peer p50", ours("paced stream memory", "p50") / best_p50 if best_p50 else 0, "<=", 1.25),
    ("exec end to end / raw fork-exec", exec_run["end_to_end_over_raw"], ">=", 0.70),
]
print()
for name, value, op, goal in checks:
    met = value >= goal if op == ">=" else value <= goal
    print(f"{name:42} {value:6.2f}  (goal {op} {goal}: {'met' if met else 'not met'})")
print(f"exec: raw {exec_run['raw_median']:,.0f} commands/s, end to end {exec_run['end_to_end_median']:,.0f} jobs/s")
PY
