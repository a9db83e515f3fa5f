#!/usr/bin/env bash
# deploy/vagrant/provision.sh INDEX COUNT: provisions VM nodeINDEX of COUNT
# (run by Vagrant as root): Debian's etcd as one member of a TLS cluster of
# all VMs, berth-api and berth-agent from the repository's release build
# (synced to /berth) as systemd services with mutual TLS, and the
# certificates made by pki.sh on the host.
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

for b in berth-api berth-agent berth; do
  [[ -x $SRC/target/release/$b ]] || {
    echo "provision: $SRC/target/release/$b is missing: run 'cargo build --release' on the host, then 'vagrant provision'" >&2
    exit 1
  }
done
[[ -s $SRC/deploy/vagrant/pki/ca.crt ]] || { echo "provision: no certificates in deploy/vagrant/pki (pki.sh)" >&2; exit 1; }

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq etcd-server etcd-client nftables iproute2 iputils-ping >/dev/null

install -m 0755 "$SRC/target/release/berth-api" "$SRC/target/release/berth-agent" \
  "$SRC/target/release/berth" /usr/local/bin/

# Certificates: berth's in /etc/berth/pki (root only), etcd's in /etc/etcd/pki
# (the etcd user's).
PKI=$SRC/deploy/vagrant/pki
install -d -m 0700 /etc/berth/pki /etc/berth/pki/etcd
install -m 0644 "$PKI/ca.crt" "$PKI/api.crt" "$PKI/agent-$NAME.crt" "$PKI/client-admin.crt" /etc/berth/pki/
install -m 0600 "$PKI/api.key" "$PKI/agent-$NAME.key" "$PKI/client-admin.key" /etc/berth/pki/
install -m 0644 "$PKI/etcd/ca.crt" "$PKI/etcd/etcd-berth-api.crt" /etc/berth/pki/etcd/
install -m 0600 "$PKI/etcd/etcd-berth-api.key" /etc/berth/pki/etcd/
install -d -m 0700 -o etcd -g etcd /etc/etcd/pki
install -m 0644 -o etcd -g etcd "$PKI/etcd/ca.crt" "$PKI/etcd/etcd-$NAME.crt" /etc/etcd/pki/
install -m 0600 -o etcd -g etcd "$PKI/etcd/etcd-$NAME.key" /etc/etcd/pki/

# etcd: one member per VM, TLS for clients and peers, client certificates required.
cluster=() endpoints=()
for ((k = 1; k <= N; k++)); do
  cluster+=("node$k=https://$(ip_of "$k"):2380")
  endpoints+=("https://$(ip_of "$k"):2379")
done
cat >/etc/default/etcd <<CONF
ETCD_NAME=$NAME
ETCD_DATA_DIR=/var/lib/etcd/berth
ETCD_LISTEN_CLIENT_URLS=https://$IP:2379,https://127.0.0.1:2379
ETCD_ADVERTISE_CLIENT_URLS=https://$IP:2379
ETCD_LISTEN_PEER_URLS=https://$IP:2380
ETCD_INITIAL_ADVERTISE_PEER_URLS=https://$IP:2380
ETCD_INITIAL_CLUSTER=$(IFS=,; echo "${cluster[*]}")
ETCD_INITIAL_CLUSTER_STATE=new
ETCD_INITIAL_CLUSTER_TOKEN=berth-vagrant
ETCD_CERT_FILE=/etc/etcd/pki/etcd-$NAME.crt
ETCD_KEY_FILE=/etc/etcd/pki/etcd-$NAME.key
ETCD_TRUSTED_CA_FILE=/etc/etcd/pki/ca.crt
ETCD_CLIENT_CERT_AUTH=true
ETCD_PEER_CERT_FILE=/etc/etcd/pki/etcd-$NAME.crt
ETCD_PEER_KEY_FILE=/etc/etcd/pki/etcd-$NAME.key
ETCD_PEER_TRUSTED_CA_FILE=/etc/etcd/pki/ca.crt
ETCD_PEER_CLIENT_CERT_AUTH=true
CONF
# A new member waits for its peers (the other VMs come up later): do not
# block provisioning on it.
systemctl enable etcd >/dev/null
systemctl restart --no-block etcd

# berth: configuration by environment files (docs/configuration.md).
cat >/etc/berth/api.env <<CONF
BERTH_ETCD_ENDPOINTS=$(IFS=,; echo "${endpoints[*]}")
BERTH_ETCD_CA=/etc/berth/pki/etcd/ca.crt
BERTH_ETCD_CERT=/etc/berth/pki/etcd/etcd-berth-api.crt
BERTH_ETCD_KEY=/etc/berth/pki/etcd/etcd-berth-api.key
BERTH_API_LISTEN=0.0.0.0:7420
BERTH_TLS_CA=/etc/berth/pki/ca.crt
BERTH_TLS_CERT=/etc/berth/pki/api.crt
BERTH_TLS_KEY=/etc/berth/pki/api.key
CONF
cat >/etc/berth/agent.env <<CONF
BERTH_NODE_NAME=$NAME
BERTH_NODE_ADDRESS=$IP
BERTH_API_URL=https://$IP:7420
BERTH_AGENT_LISTEN=$IP:7421
BERTH_TLS_CA=/etc/berth/pki/ca.crt
BERTH_TLS_CERT=/etc/berth/pki/agent-$NAME.crt
BERTH_TLS_KEY=/etc/berth/pki/agent-$NAME.key
CONF
chmod 0600 /etc/berth/api.env /etc/berth/agent.env
install -m 0644 "$SRC/deploy/systemd/berth-api.service" "$SRC/deploy/systemd/berth-agent.service" \
  /etc/systemd/system/
systemctl daemon-reload
systemctl enable berth-api berth-agent >/dev/null
systemctl restart berth-api berth-agent
echo "provision: $NAME ($IP) configured; 'sudo berth node ls' once a majority of VMs is up"
