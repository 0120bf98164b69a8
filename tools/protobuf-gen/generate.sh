#!/usr/bin/env bash
# Writes crates/apiserver/data/kubernetes.fds.zst: the protobuf descriptors of the built-in kinds
# whose request bodies the API server decodes (see README.md). Needs protoc and zstd.
#
#   tools/protobuf-gen/generate.sh PATH/TO/k8s-pb     # a checkout of github.com/kube-rs/k8s-pb
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
checkout=${1:?usage: generate.sh PATH/TO/k8s-pb}
protos="$checkout/k8s-pb-codegen/protos"
[ -d "$protos/api/core/v1" ] || { echo "no protos under $protos" >&2; exit 1; }
out="$here/../../crates/apiserver/data/kubernetes.fds.zst"
mapfile -t files < <(grep -v '^#' "$here/protos.list" | sed '/^$/d')
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
(cd "$protos" && protoc -I. --include_imports -o "$scratch/kubernetes.fds" "${files[@]}" 2>/dev/null)
zstd -q -19 -f "$scratch/kubernetes.fds" -o "$out"
echo "wrote $out ($(stat -c %s "$out") bytes) from k8s-pb $(git -C "$checkout" rev-parse --short HEAD)," \
     "Kubernetes $(grep -oP 'KUBERNETES_VERSION := "\K[^"]+' "$checkout/justfile")"
