#!/usr/bin/env bash
# deploy/vagrant/pki.sh N: the Vagrant cluster's certificates, made on the
# host with the repository's `berth` binary into deploy/vagrant/pki/ (kept:
# an existing CA is reused, missing certificates are added).
#   pki/ca.crt, api.*, agent-nodeK.*, client-admin.*   the cluster CA (berth)
#   pki/etcd/ca.crt, etcd-node1.*, etcd-berth-api.*   etcd's own CA (etcd runs on node1)
# The CA keys and client-admin.key stay here on the host: provision.sh gives
# each VM only its own keys (docs/deploy.md).
set -euo pipefail
DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$DIR/../.." && pwd)
NODES=${1:-3}
BERTH=${BERTH:-$ROOT/target/release/berth}
[[ $NODES =~ ^[1-9]$ ]] || { echo "pki.sh: node count 1..9, got '$NODES'" >&2; exit 2; }
[[ -x $BERTH ]] || { echo "pki.sh: $BERTH is missing; run 'cargo build --release' first" >&2; exit 1; }
PKI=$DIR/pki
mkdir -p "$PKI/etcd"
chmod 700 "$PKI"

# issue DIR STEM ARGS...: `berth cert ARGS --dir DIR` unless DIR/STEM.crt exists.
issue() {
  local dir=$1 stem=$2
  shift 2
  [[ -s $dir/$stem.crt ]] || "$BERTH" cert "$@" --dir "$dir"
}

ips=()
for ((i = 1; i <= NODES; i++)); do ips+=("192.168.205.$((9 + i))"); done
api_sans=$(IFS=,; echo "${ips[*]},localhost,127.0.0.1")

issue "$PKI" ca ca
issue "$PKI" api api --san "$api_sans"
issue "$PKI" client-admin client --name admin --role admin
issue "$PKI/etcd" ca ca --name "berth etcd CA"
issue "$PKI/etcd" etcd-berth-api etcd --name berth-api
issue "$PKI/etcd" etcd-node1 etcd --name node1 --san "127.0.0.1,localhost"
for ((i = 1; i <= NODES; i++)); do
  issue "$PKI" "agent-node$i" agent --node "node$i" --san "${ips[i - 1]},node$i"
done
