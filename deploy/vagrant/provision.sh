#!/usr/bin/env bash
# deploy/vagrant/provision.sh INDEX COUNT: provisions VM nodeINDEX of COUNT
# (run by Vagrant as root). Every VM runs berth-agent; node1 is also the
# control node: etcd (TLS, on loopback only: berth-api is its one client)
# and berth-api (mutual TLS on 192.168.205.10:7420). Binaries come from the
# repository's release build (synced to /berth), certificates from pki.sh
# on the host. Each VM gets only its own keys: node1 the API's and etcd's,
# every node its agent's; no VM gets a CA key or the admin client key (root
# on node1 is an admin through the Unix socket).
set -euo pipefail

I=${1:?node index}
N=${2:?node count}
if ! [[ $I =~ ^[1-9]$ && $N =~ ^[1-9]$ ]] || ((I > N)); then
  echo "provision: bad INDEX/COUNT '$I' '$N'" >&2
  exit 2
fi
SRC=/berth
NAME=node$I
ip_of() { echo "192.168.205.$((9 + $1))"; }
IP=$(ip_of "$I")
CONTROL_IP=$(ip_of 1)

for b in berth-api berth-agent berth; do
  [[ -x $SRC/target/release/$b ]] || {
    echo "provision: $SRC/target/release/$b is missing: run 'cargo build --release' on the host, then 'vagrant provision'" >&2
    exit 1
  }
done
[[ -s $SRC/deploy/vagrant/pki/ca.crt ]] || { echo "provision: no certificates in deploy/vagrant/pki (pki.sh)" >&2; exit 1; }

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
pkgs=(nftables iproute2 iputils-ping)
((I == 1)) && pkgs+=(etcd-server etcd-client)
apt-get install -y -qq "${pkgs[@]}" >/dev/null

install -m 0755 "$SRC/target/release/berth-agent" "$SRC/target/release/berth" /usr/local/bin/
((I == 1)) && install -m 0755 "$SRC/target/release/berth-api" /usr/local/bin/

# Certificates: berth's in /etc/berth/pki (root only), etcd's in /etc/etcd/pki
# (the etcd user's). Only this VM's own keys.
PKI=$SRC/deploy/vagrant/pki
install -d -m 0700 /etc/berth/pki
install -m 0644 "$PKI/ca.crt" "$PKI/agent-$NAME.crt" /etc/berth/pki/
install -m 0600 "$PKI/agent-$NAME.key" /etc/berth/pki/

if ((I == 1)); then
  install -d -m 0700 /etc/berth/pki/etcd
  install -m 0644 "$PKI/api.crt" /etc/berth/pki/
  install -m 0600 "$PKI/api.key" /etc/berth/pki/
  install -m 0644 "$PKI/etcd/ca.crt" "$PKI/etcd/etcd-berth-api.crt" /etc/berth/pki/etcd/
  install -m 0600 "$PKI/etcd/etcd-berth-api.key" /etc/berth/pki/etcd/
  install -d -m 0700 -o etcd -g etcd /etc/etcd/pki
  install -m 0644 -o etcd -g etcd "$PKI/etcd/ca.crt" "$PKI/etcd/etcd-node1.crt" /etc/etcd/pki/
  install -m 0600 -o etcd -g etcd "$PKI/etcd/etcd-node1.key" /etc/etcd/pki/

  # etcd: one member, TLS for clients and peers, client certificates
  # required, on loopback only (no etcd traffic leaves the VM).
  cat >/etc/default/etcd <<CONF
ETCD_NAME=node1
ETCD_DATA_DIR=/var/lib/etcd/berth
ETCD_LISTEN_CLIENT_URLS=https://127.0.0.1:2379
ETCD_ADVERTISE_CLIENT_URLS=https://127.0.0.1:2379
ETCD_LISTEN_PEER_URLS=https://127.0.0.1:2380
ETCD_INITIAL_ADVERTISE_PEER_URLS=https://127.0.0.1:2380
ETCD_INITIAL_CLUSTER=node1=https://127.0.0.1:2380
ETCD_INITIAL_CLUSTER_STATE=new
ETCD_INITIAL_CLUSTER_TOKEN=berth-vagrant
ETCD_CERT_FILE=/etc/etcd/pki/etcd-node1.crt
ETCD_KEY_FILE=/etc/etcd/pki/etcd-node1.key
ETCD_TRUSTED_CA_FILE=/etc/etcd/pki/ca.crt
ETCD_CLIENT_CERT_AUTH=true
ETCD_PEER_CERT_FILE=/etc/etcd/pki/etcd-node1.crt
ETCD_PEER_KEY_FILE=/etc/etcd/pki/etcd-node1.key
ETCD_PEER_TRUSTED_CA_FILE=/etc/etcd/pki/ca.crt
ETCD_PEER_CLIENT_CERT_AUTH=true
CONF
  systemctl enable etcd >/dev/null
  systemctl restart etcd

  # berth: configuration by environment files (docs/configuration.md).
  cat >/etc/berth/api.env <<CONF
BERTH_ETCD_ENDPOINTS=https://127.0.0.1:2379
BERTH_ETCD_CA=/etc/berth/pki/etcd/ca.crt
BERTH_ETCD_CERT=/etc/berth/pki/etcd/etcd-berth-api.crt
BERTH_ETCD_KEY=/etc/berth/pki/etcd/etcd-berth-api.key
BERTH_API_LISTEN=0.0.0.0:7420
BERTH_TLS_CA=/etc/berth/pki/ca.crt
BERTH_TLS_CERT=/etc/berth/pki/api.crt
BERTH_TLS_KEY=/etc/berth/pki/api.key
CONF
  chmod 0600 /etc/berth/api.env
fi

cat >/etc/berth/agent.env <<CONF
BERTH_NODE_NAME=$NAME
BERTH_NODE_ADDRESS=$IP
BERTH_API_URL=https://$CONTROL_IP:7420
BERTH_AGENT_LISTEN=$IP:7421
BERTH_TLS_CA=/etc/berth/pki/ca.crt
BERTH_TLS_CERT=/etc/berth/pki/agent-$NAME.crt
BERTH_TLS_KEY=/etc/berth/pki/agent-$NAME.key
CONF
chmod 0600 /etc/berth/agent.env
units=(berth-agent)
((I == 1)) && units+=(berth-api)
for u in "${units[@]}"; do
  install -m 0644 "$SRC/deploy/systemd/$u.service" /etc/systemd/system/
done
systemctl daemon-reload
systemctl enable "${units[@]}" >/dev/null
systemctl restart "${units[@]}"
if ((I == 1)); then
  echo "provision: $NAME ($IP) configured as the control node; 'sudo berth node ls' here"
else
  echo "provision: $NAME ($IP) configured; its agent registers with https://$CONTROL_IP:7420"
fi
