#!/usr/bin/env bash
# Side by side on this machine: a 3-node etcd (Debian's etcd-server) and a
# 3-node Trireme on 127.0.0.1, one after the other, driven by the same
# closed-loop driver (benches/src/bin/compare.rs, one backend per system).
# 100-byte values, 100,000 uniform keys; etcd fsyncs its WAL before every
# acknowledgement by default, Trireme fdatasyncs its log on a majority.
#
#   scripts/compare.sh [SECONDS]      (default 10 measured seconds per cell)
#
# Cells: write-only with 1, 16 and 64 clients; 50/50 at 64 clients with
# linearizable reads; 50/50 at 64 with LOCAL reads (etcd: serializable).
# Prints a Markdown table: ops/s, p50/p99/p999, the servers' CPU (cores, and
# microseconds per operation, summed over the 3 nodes, from /proc/PID/stat)
# and Trireme's throughput as a multiple of etcd's.
#
# SYSTEMS="trireme" runs one system only; CELLS narrows the matrix (see
# below); BIN_DIR=DIR runs trireme-server and compare from DIR (an A/B build);
# RESULTS=FILE keeps the raw JSON lines. (`cargo bench -p trireme-benches`
# rebuilds target/release/compare without the etcd backend: with BIN_DIR,
# make sure compare was built with --features etcd.) Every process started here is
# stopped by its pid, also when the script fails.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
WARMUP=${WARMUP:-2}
SYSTEMS=${SYSTEMS:-etcd trireme}
# name:clients:read-ratio:reads[:batch]; a batch above 1 (Trireme only) makes
# each operation one Client::put_many of that many pairs.
CELLS=${CELLS:-w1:1:0:linearizable w16:16:0:linearizable w64:64:0:linearizable rw64:64:0.5:linearizable local64:64:0.5:local}

if [[ " $SYSTEMS " == *" etcd "* ]] && ! command -v etcd >/dev/null 2>&1; then
  echo "installing etcd-server (apt-get)" >&2
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends etcd-server >/dev/null
fi

if [ -z "${BIN_DIR:-}" ]; then
  # etcd-client's build script runs protoc: use the one protoc-bin-vendored
  # ships (already a build dependency of trireme-proto), not a system one.
  if [ -z "${PROTOC:-}" ]; then
    PROTOC=$(cargo metadata --format-version 1 | python3 -c '
import json, os, sys
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == "protoc-bin-vendored-linux-x86_64":
        print(os.path.join(os.path.dirname(p["manifest_path"]), "bin", "protoc"))
        break')
    export PROTOC
  fi
  cargo build --release -q -p trireme-server -p trireme-benches --features trireme-benches/etcd \
    --bin trireme-server --bin compare
  BIN_DIR=target/release
fi
SERVER=$BIN_DIR/trireme-server
DRIVER=$BIN_DIR/compare
CLK_TCK=$(getconf CLK_TCK)

DIR=$(mktemp -d /tmp/trireme-compare.XXXXXX)
RESULTS=${RESULTS:-$DIR/results.jsonl}
PIDS=()
stop_all() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}
cleanup() { stop_all; rm -rf "$DIR"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_etcd() {
  local cluster="" i
  local -a client peer
  for i in 1 2 3; do
    client[i]=$(free_port)
    peer[i]=$(free_port)
    cluster+="${cluster:+,}e$i=http://127.0.0.1:${peer[i]}"
  done
  EP=""
  for i in 1 2 3; do
    etcd --name "e$i" --data-dir "$DIR/etcd$i" \
      --listen-client-urls "http://127.0.0.1:${client[i]}" \
      --advertise-client-urls "http://127.0.0.1:${client[i]}" \
      --listen-peer-urls "http://127.0.0.1:${peer[i]}" \
      --initial-advertise-peer-urls "http://127.0.0.1:${peer[i]}" \
      --initial-cluster "$cluster" --initial-cluster-state new \
      --initial-cluster-token "compare-$$" --logger zap --log-level warn \
      >"$DIR/etcd$i.out" 2>"$DIR/etcd$i.log" &
    PIDS+=("$!")
    EP+="${EP:+,}127.0.0.1:${client[i]}"
  done
}

start_trireme() {
  local ic="" i
  local -a port peer
  for i in 1 2 3; do
    port[i]=$(free_port)
    peer[i]=$(free_port)
    ic+="${ic:+,}$i=127.0.0.1:${peer[i]}"
  done
  EP=""
  for i in 1 2 3; do
    "$SERVER" --node-id "$i" --listen "127.0.0.1:${port[i]}" --peer-listen "127.0.0.1:${peer[i]}" \
      --data-dir "$DIR/trireme$i" \
      --initial-cluster "$ic" >"$DIR/trireme$i.out" 2>"$DIR/trireme$i.log" &
    PIDS+=("$!")
    EP+="${EP:+,}127.0.0.1:${port[i]}"
  done
}

# Waits until every endpoint answers and writes go through.
wait_ready() {
  local system=$1
  for _ in $(seq 1 100); do
    if "$DRIVER" --system "$system" --endpoints "$EP" --clients 3 --warmup 0 --duration 0.5 \
      2>>"$DIR/ready.log" | tee -a "$DIR/ready.log" |
      python3 -c 'import json,sys; w=json.load(sys.stdin); sys.exit(0 if w["ok"]>0 else 1)' 2>/dev/null; then
      return 0
    fi
    sleep 0.2
  done
  echo "$system did not become ready; logs in $DIR" >&2
  trap - EXIT
  stop_all
  exit 1
}

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for system in $SYSTEMS; do
  case $system in
    etcd) start_etcd ;;
    trireme) start_trireme ;;
    *) echo "unknown system $system" >&2; exit 2 ;;
  esac
  wait_ready "$system"
  pids=$(IFS=,; echo "${PIDS[*]}")
  for cell in $CELLS; do
    IFS=: read -r name clients ratio reads batch <<<"$cell"
    batch=${batch:-1}
    if [ "$batch" != 1 ] && [ "$system" != trireme ]; then continue; fi
    load=$(cut -d' ' -f1 /proc/loadavg)
    "$DRIVER" --system "$system" --endpoints "$EP" --clients "$clients" --keys 100000 \
      --value-size 100 --read-ratio "$ratio" --reads "$reads" --warmup "$WARMUP" \
      --batch "$batch" --duration "$DURATION" --pids "$pids" --clk-tck "$CLK_TCK" |
      python3 -c "import json,sys; w=json.load(sys.stdin); w['cell']='$name'; w['load']=$load; print(json.dumps(w))" \
      >>"$RESULTS"
    echo "$system $name done" >&2
  done
  stop_all
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

python3 - "$RESULTS" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {(r["system"], r["cell"]): r for r in rows}
names = {"w1": "write-only, 1 client", "w16": "write-only, 16 clients",
         "w64": "write-only, 64 clients", "rw64": "50/50, 64 clients, linearizable reads",
         "local64": "50/50, 64 clients, LOCAL (etcd: serializable) reads"}
cells = list(dict.fromkeys(r["cell"] for r in rows))
systems = list(dict.fromkeys(r["system"] for r in rows))
def fmt(r):
    if r is None:
        return "-"
    lat = "/".join(f"{r[k]/1000:.2f}" for k in ("p50_us", "p99_us", "p999_us"))
    cpu = f"{r['cpu_cores']:.2f} cores, {r['cpu_us_per_op']:.0f} us/op" if r.get("cpu_us_per_op") else "-"
    err = f", {r['errors']} errors" if r["errors"] else ""
    return f"{r['ops_per_sec']:,.0f} ops/s; {lat} ms; {cpu}{err} (load {r['load']})"
print("| cell | " + " | ".join(systems) + " | trireme / etcd |")
print("|---|" + "---|" * len(systems) + "---:|")
for c in cells:
    e, t = by.get(("etcd", c)), by.get(("trireme", c))
    ratio = f"{t['ops_per_sec']/e['ops_per_sec']:.2f}x" if e and t and e["ops_per_sec"] else "-"
    print(f"| {names.get(c, c)} | " + " | ".join(fmt(by.get((s, c))) for s in systems) + f" | {ratio} |")
EOF
