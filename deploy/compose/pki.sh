#!/bin/sh
# The compose stack's certificates, made once into the `pki` volume by the
# one-shot `pki` service with `berth cert`:
#   /pki/ca.crt            the cluster CA (berth-api, agents, CLI)
#   /pki/api.*             berth-api  (spiffe://berth/api; api, berth-api, 192.168.205.2)
#   /pki/agent-nodeN.*     agents     (spiffe://berth/agent/nodeN; 192.168.205.(9+N))
#   /pki/client-admin.*    the CLI    (spiffe://berth/client/admin)
#   /pki/etcd/ca.crt       etcd's own CA: etcd admits every certificate it signed
#   /pki/etcd/etcd-etcdN.* etcd members; /pki/etcd/etcd-berth-api.* berth-api's etcd client
set -eu
cd /pki
if [ -s ca.crt ] && [ -s etcd/ca.crt ]; then
  echo "pki: certificates exist; keeping them"
  exit 0
fi
berth cert ca --force --dir /pki
berth cert api --force --dir /pki --san api,berth-api,192.168.205.2
for i in 1 2 3; do
  berth cert agent --force --dir /pki --node "node$i" --san "192.168.205.$((9 + i)),node$i"
done
berth cert client --force --dir /pki --name admin
mkdir -p etcd
berth cert ca --force --dir /pki/etcd --name "berth etcd CA"
for i in 1 2 3; do
  berth cert etcd --force --dir /pki/etcd --name "etcd$i" --san "etcd$i,192.168.205.2$i"
done
berth cert etcd --force --dir /pki/etcd --name berth-api
