#!/usr/bin/env bash
# Regenerates crates/axle/text-order.txt, the order in which the linker lays out Axle's code
# (see README.md here): runs a release `axle server` under callgrind, records the functions its
# start runs, those it runs alone (its controllers' periodic passes) and those it runs while
# serving an agent and kubectl; the same for that agent.
# Needs valgrind and kubectl. Takes a few minutes.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'kill -9 $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

target=${CARGO_TARGET_DIR:-$root/target}/text-order
CARGO_PROFILE_RELEASE_STRIP=false cargo build --release -p axle --target-dir "$target" --manifest-path "$root/Cargo.toml"
axle=$target/release/axle
port=$((20000 + RANDOM % 20000))

valgrind --tool=callgrind --demangle=no --dump-instr=no --callgrind-out-file="$work/callgrind.%p" \
  "$axle" server --listen "127.0.0.1:$port" --data-dir "$work/server" >"$work/server.log" 2>&1 &
server=$!
kube=(kubectl --kubeconfig "$work/server/admin.kubeconfig")
for _ in $(seq 600); do
  [ -f "$work/server/admin.kubeconfig" ] && "${kube[@]}" get --raw /readyz >/dev/null 2>&1 && break
  sleep 0.5
done
"${kube[@]}" get --raw /readyz >/dev/null
sleep 20 # the controllers' first passes belong to the start
callgrind_control --dump=startup "$server" >/dev/null
sleep 45 # alone: the controllers' periodic passes, watch bookmarks
callgrind_control --dump=idle "$server" >/dev/null

valgrind --tool=callgrind --demangle=no --dump-instr=no --callgrind-out-file="$work/callgrind.%p" \
  "$axle" agent --server "https://127.0.0.1:$port" --ca-file "$work/server/pki/ca.crt" \
  --token-file "$work/server/node-token" --node-name hpc-1 --data-dir "$work/agent" >"$work/agent.log" 2>&1 &
agent=$!
for _ in $(seq 600); do
  "${kube[@]}" get node hpc-1 >/dev/null 2>&1 && break
  sleep 0.5
done
"${kube[@]}" wait --for=condition=Ready node/hpc-1 --timeout=300s >/dev/null
sleep 20 # the agent's first sync belongs to its start
callgrind_control --dump=startup "$agent" >/dev/null
sleep 45 # registered, no pods: heartbeats and lease renewals
callgrind_control --dump=idle "$agent" >/dev/null
"${kube[@]}" apply -f "$root/examples/" >/dev/null
"${kube[@]}" get pods -A -w --request-timeout=90s >/dev/null 2>&1 &
for _ in $(seq 6); do
  "${kube[@]}" get nodes,pods,deployments,leases -A -o wide >/dev/null
  "${kube[@]}" describe node hpc-1 >/dev/null
  "${kube[@]}" auth can-i create pods >/dev/null || true
  sleep 10
done
callgrind_control --dump=serving "$server" >/dev/null
callgrind_control --dump=serving "$agent" >/dev/null
sleep 2

nm --defined-only "$axle" >"$work/symbols"
dumps() { echo "$work/callgrind.$server.$1" "$work/callgrind.$agent.$1"; }
# Dumps are numbered in order: 1 startup, 2 idle, 3 serving, for each process.
# shellcheck disable=SC2046
python3 "$root/tools/text-order/order.py" --symbols "$work/symbols" \
  --idle $(dumps 2) --serving $(dumps 3) --startup $(dumps 1) >"$root/crates/axle/text-order.txt"
