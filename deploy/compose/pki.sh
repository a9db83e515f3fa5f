#!/bin/sh
# The compose stack's certificates, made once with `berth cert` by the
# one-shot `pki` service into its own volume (`pki`, mounted nowhere else:
# it alone holds the CA keys), then copied into one volume per container,
# each holding only what that container needs:
#   pki-api    ca.crt, api.*                          (spiffe://berth/api; api, berth-api, 192.168.205.2)
#              etcd/ca.crt, etcd/etcd-berth-api.*     berth-api's etcd client certificate
#   pki-nodeN  ca.crt, agent-nodeN.*                  (spiffe://berth/agent/nodeN; 192.168.205.(9+N))
#   pki-cli    ca.crt, client-admin.*                 (spiffe://berth/admin/admin)
#   pki-etcdN  etcd/ca.crt, etcd/etcd-etcdN.*         etcd's own CA: etcd admits every certificate it signed
# No container but `pki` sees ca.key or etcd/ca.key; the admin key is only
# in the `cli` container. PKI_MASTER and PKI_OUT (default /pki and /out)
# move the directories, for trying the script outside Docker.
set -eu
MASTER=${PKI_MASTER:-/pki}
OUT=${PKI_OUT:-/out}
umask 077
cd "$MASTER"
if [ -s ca.crt ] && [ -s etcd/ca.crt ]; then
  echo "pki: certificates exist; keeping them"
else
  berth cert ca --force --dir "$MASTER"
  berth cert api --force --dir "$MASTER" --san api,berth-api,192.168.205.2
  for i in 1 2 3; do
    berth cert agent --force --dir "$MASTER" --node "node$i" --san "192.168.205.$((9 + i)),node$i"
  done
  berth cert client --force --dir "$MASTER" --name admin --role admin
  mkdir -p etcd
  berth cert ca --force --dir "$MASTER/etcd" --name "berth etcd CA"
  for i in 1 2 3; do
    berth cert etcd --force --dir "$MASTER/etcd" --name "etcd$i" --san "etcd$i,192.168.205.2$i"
  done
  berth cert etcd --force --dir "$MASTER/etcd" --name berth-api
fi

# give VOLUME FILE...: VOLUME holds exactly FILEs (paths under $MASTER).
give() {
  name=$1
  vol=$OUT/$1
  shift
  [ -d "$vol" ] || { echo "pki: $vol is not mounted" >&2; exit 1; }
  find "$vol" -mindepth 1 -delete
  for f in "$@"; do
    mkdir -p "$vol/$(dirname "$f")"
    case $f in
      *.key) mode=0600 ;;
      *) mode=0644 ;;
    esac
    cp "$MASTER/$f" "$vol/$f"
    chmod "$mode" "$vol/$f"
  done
  echo "pki: $name gets $*"
}
give api ca.crt api.crt api.key etcd/ca.crt etcd/etcd-berth-api.crt etcd/etcd-berth-api.key
for i in 1 2 3; do
  give "node$i" ca.crt "agent-node$i.crt" "agent-node$i.key"
  give "etcd$i" etcd/ca.crt "etcd/etcd-etcd$i.crt" "etcd/etcd-etcd$i.key"
done
give cli ca.crt client-admin.crt client-admin.key
