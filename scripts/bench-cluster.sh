#!/usr/bin/env bash
# Starts a local 3-node release cluster on 127.0.0.1, runs `trireme bench` for
# 1, 16 and 64 clients, write-only and 50/50, 100-byte values over 100,000
# keys, and prints a Markdown table (the one in BENCHMARKS.md). Every node is
# stopped by its pid at the end.
#
#   scripts/bench-cluster.sh [DURATION]      (default 15s per cell)
#
# CLIENTS="64" RATIOS="0" narrow the matrix; KEYS=1000 changes the key count
# and ZIPF=0.99 chooses keys by Zipf's law (hot keys) instead of uniformly;
# IDLE=30 also measures the idle cluster's CPU over 30 s (from /proc, before
# any load); each node's resident memory (now and peak) is printed at the end; BIN_DIR=DIR runs the binaries
# in DIR (another build, for an A/B comparison) instead of building these.
# TXN=1 adds a table of contended transactions (64 clients, read-modify-write
# of 4 keys, over 100 and 10,000 keys, SERIALIZABLE and SNAPSHOT, no retry);
# TXN_READS="get_many one_by_one" runs each cell with the keys read in one
# get_many (the default) and then one get at a time, for an A/B.
# TLS=1 runs the cluster with TLS on both ports (mutual on the peer port,
# client certificates required on the client port; certificates made with
# `trireme-server certs`) and the bench client over TLS; run it with TLS=0
# and TLS=1 alternately for an A/B of what TLS costs.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-15s}
CLIENTS=${CLIENTS:-1 16 64}
RATIOS=${RATIOS:-0 0.5}
if [ -z "${BIN_DIR:-}" ]; then
  cargo build --release -q -p trireme-server -p trireme-client
  BIN_DIR=target/release
fi
B=$BIN_DIR/trireme-server
T=$BIN_DIR/trireme
DIR=$(mktemp -d /tmp/trireme-bench.XXXXXX)
PORTS=()
PEERS=()
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
for i in 1 2 3; do
  PORTS+=("$(free_port)")
  PEERS+=("$(free_port)")
done
IC="1=127.0.0.1:${PEERS[0]},2=127.0.0.1:${PEERS[1]},3=127.0.0.1:${PEERS[2]}"
EP="127.0.0.1:${PORTS[0]},127.0.0.1:${PORTS[1]},127.0.0.1:${PORTS[2]}"
NODE_TLS=()
CLIENT_TLS=()
if [ "${TLS:-0}" = 1 ]; then
  C=$DIR/certs
  "$B" certs init "$C" >/dev/null
  for i in 1 2 3; do "$B" certs node "$i" --dir "$C" >/dev/null; done
  "$B" certs client bench --dir "$C" >/dev/null
  CLIENT_TLS=(--cacert "$C/ca.crt" --cert "$C/client-bench.crt" --key "$C/client-bench.key")
fi
node_tls() {
  if [ "${TLS:-0}" = 1 ]; then
    local c=$C/node-$1.crt k=$C/node-$1.key
    NODE_TLS=(--tls-cert "$c" --tls-key "$k" --tls-ca "$C/ca.crt" --client-cert-auth
      --peer-tls-cert "$c" --peer-tls-key "$k" --peer-tls-ca "$C/ca.crt")
  fi
}
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
for i in 1 2 3; do
  node_tls "$i"
  "$B" "${NODE_TLS[@]}" --node-id "$i" --listen "127.0.0.1:${PORTS[$((i-1))]}" --peer-listen "127.0.0.1:${PEERS[$((i-1))]}" --data-dir "$DIR/n$i" --initial-cluster "$IC" \
    >"$DIR/n$i.out" 2>"$DIR/n$i.log" &
  PIDS+=("$!")
done
for _ in $(seq 1 100); do
  "$T" "${CLIENT_TLS[@]}" --endpoints "$EP" put bench/ready yes >/dev/null 2>&1 && break
  sleep 0.2
done
if [ -n "${IDLE:-}" ]; then
  ticks() { local t=0; for p in "${PIDS[@]}"; do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo "$t"; }
  sleep 5
  t0=$(ticks); s0=$(date +%s.%N)
  sleep "$IDLE"
  t1=$(ticks); s1=$(date +%s.%N)
  python3 -c "print(f'idle: 3 nodes used {($t1-$t0)/$(getconf CLK_TCK)/($s1-$s0)*100:.2f}% of one core together over {$s1-$s0:.0f} s')"
fi
echo "| clients | workload | ops/s | p50 ms | p99 ms | p999 ms | errors |"
echo "|---|---|---|---|---|---|---|"
for clients in $CLIENTS; do
  for ratio in $RATIOS; do
    name=$([ "$ratio" = 0 ] && echo "write-only" || echo "50/50")
    "$T" "${CLIENT_TLS[@]}" --endpoints "$EP" --json bench --clients "$clients" --keys "${KEYS:-100000}" ${ZIPF:+--zipf "$ZIPF"} --value-size 100 \
      --read-ratio "$ratio" --duration "$DURATION" 2>/dev/null | python3 -c "
import json,sys
w=json.load(sys.stdin); l=w['latency_us']
errs=w.get('errors_total',0)
print(f\"| $clients | $name | {w['ops_per_sec']:.0f} | {l['p50']/1000:.2f} | {l['p99']/1000:.2f} | {l['p999']/1000:.2f} | {errs} |\")"
  done
done
if [ "${TXN:-0}" = 1 ]; then
  echo
  echo "| clients | keys | isolation | reads | commits/s | abort rate | p50 ms | p99 ms |"
  echo "|---|---|---|---|---|---|---|---|"
  for keys in 100 10000; do
    for iso in serializable snapshot; do
      for reads in ${TXN_READS:-get_many}; do
        READ_FLAG=()
        [ "$reads" = one_by_one ] && READ_FLAG=(--txn-one-by-one)
        "$T" "${CLIENT_TLS[@]}" --endpoints "$EP" --json bench --clients 64 --keys "$keys" --txn 4 --isolation "$iso" \
          "${READ_FLAG[@]}" --prefix "txn$keys/" --duration "$DURATION" 2>/dev/null | python3 -c "
import json,sys
w=json.load(sys.stdin); l=w['latency_us']
print(f\"| 64 | $keys | $iso | $reads | {w['ops_per_sec']:.0f} | {w['abort_rate']*100:.1f}% | {l['p50']/1000:.2f} | {l['p99']/1000:.2f} |\")"
      done
    done
  done
fi
# The nodes' memory after the run: resident now and at peak (from /proc).
for i in 1 2 3; do
  p=${PIDS[$((i-1))]}
  awk -v n="$i" '/^VmRSS/ {r=$2} /^VmHWM/ {h=$2} END {printf "rss: node %s %.0f MiB (peak %.0f MiB)\n", n, r/1024, h/1024}' "/proc/$p/status"
done
