#!/usr/bin/env bash
# The development PKI, made with the openssl command line.
#
#   pki.sh DIR
#
# DIR/ca.pem, ca.key           a dev CA (EC P-256, 10 years): what clients pin
#                              to verify the gateway (mm init --server-ca, curl --cacert)
# DIR/gateway.pem, .key        the gateway's server certificate, signed by the CA,
#                              for localhost, 127.0.0.1, ::1, this host's name and
#                              every address the machine has now (ip -o addr)
# DIR/gateway.san              the subjectAltName it was made for
# DIR/admin.pem, admin.key     an admin client certificate: self-signed like any
#                              peer's, CN=admin, email admin@localhost
# DIR/admin.peer_id            its peer_id (hex SHA-256 of its DER SubjectPublicKeyInfo),
#                              the value that goes into MM_ADMIN_PEER_IDS
#
# MM_PKI_EXTRA_SAN adds names to the gateway's certificate, e.g.
# "DNS:gateway,DNS:mm.example.org" (docker-compose sets it).
#
# Idempotent: existing files are kept, except the gateway certificate, which
# is made again when the machine's addresses changed, when it no longer
# verifies against ca.pem, or within 7 days of its expiry. Keys are 0600.
set -euo pipefail

if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
mkdir -p "$1"
dir=$(cd "$1" && pwd)
umask 077

exec 9>"$dir/.pki.lock"
flock 9

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# One private key: EC P-256.
new_key()
{
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
    chmod 0600 "$1"
}

# Our own minimal config, so neither the system's openssl.cnf nor OPENSSL_CONF
# adds extensions of their own.
cat >"$tmp/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
[ca_ext]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[gateway_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = ${ENV::MM_PKI_SAN}
[admin_ext]
basicConstraints = critical, CA:FALSE
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
subjectAltName = email:admin@localhost
EOF
export OPENSSL_CONF="$tmp/openssl.cnf"
# Referenced by [gateway_ext]; must be set whenever the file is read.
export MM_PKI_SAN=DNS:localhost

serial()
{
    echo "0x$(openssl rand -hex 16)"
}

# --- CA ----------------------------------------------------------------------
if [ ! -s "$dir/ca.pem" ] || [ ! -s "$dir/ca.key" ]; then
    new_key "$dir/ca.key"
    openssl req -new -x509 -key "$dir/ca.key" -subj "/O=Matchmaker dev/CN=Matchmaker dev CA" \
        -days 3650 -set_serial "$(serial)" -extensions ca_ext -out "$dir/ca.pem"
    rm -f "$dir/gateway.pem"
    echo "pki: made $dir/ca.pem" >&2
fi

# --- gateway -----------------------------------------------------------------
# Every unicast address of the machine, IPv4 and IPv6. IPv6 link-local ones
# (fe80::/10) are left out: they are only usable with a zone index, which a
# URL and a certificate cannot carry usefully.
machine_addresses()
{
    ip -o addr show 2>/dev/null | awk '$3 == "inet" || $3 == "inet6" { sub(/\/.*/, "", $4); print $4 }' |
        grep -viE '^fe[89ab][0-9a-f]:' || true
}

san_list()
{
    local h
    {
        echo DNS:localhost
        h=$(hostname 2>/dev/null || true)
        # Only names a certificate can carry.
        if [[ "$h" =~ ^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$ ]] && [ "$h" != localhost ]; then
            echo "DNS:$h"
        fi
        h=$(timeout 2 hostname -f 2>/dev/null || true)
        if [[ "$h" =~ ^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$ ]] && [ "$h" != localhost ]; then
            echo "DNS:$h"
        fi
        echo IP:127.0.0.1
        echo IP:::1
        machine_addresses | sed 's/^/IP:/'
        if [ -n "${MM_PKI_EXTRA_SAN:-}" ]; then
            tr ',' '\n' <<<"$MM_PKI_EXTRA_SAN"
        fi
    } | awk '!seen[$0]++' | paste -sd, -
}

san=$(san_list)
fresh=1
if [ -s "$dir/gateway.pem" ] && [ -s "$dir/gateway.key" ] &&
    [ "$(cat "$dir/gateway.san" 2>/dev/null)" = "$san" ] &&
    openssl verify -CAfile "$dir/ca.pem" "$dir/gateway.pem" >/dev/null 2>&1 &&
    openssl x509 -in "$dir/gateway.pem" -noout -checkend 604800 >/dev/null; then
    fresh=0
fi
if [ "$fresh" -eq 1 ]; then
    [ -s "$dir/gateway.key" ] || new_key "$dir/gateway.key"
    MM_PKI_SAN=$san openssl req -new -key "$dir/gateway.key" -subj "/O=Matchmaker dev/CN=localhost" \
        -out "$tmp/gateway.csr"
    # 825 days: the longest validity some clients accept for a server certificate.
    MM_PKI_SAN=$san openssl x509 -req -in "$tmp/gateway.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
        -set_serial "$(serial)" -days 825 -extfile "$OPENSSL_CONF" -extensions gateway_ext \
        -out "$tmp/gateway.pem" 2>/dev/null
    mv "$tmp/gateway.pem" "$dir/gateway.pem"
    echo "$san" >"$dir/gateway.san"
    echo "pki: made $dir/gateway.pem for $san" >&2
fi

# --- admin client certificate ---------------------------------------------------
if [ ! -s "$dir/admin.pem" ] || [ ! -s "$dir/admin.key" ]; then
    new_key "$dir/admin.key"
    openssl req -new -x509 -key "$dir/admin.key" -subj "/CN=admin" -days 3650 -set_serial "$(serial)" \
        -extensions admin_ext -out "$dir/admin.pem"
    echo "pki: made $dir/admin.pem" >&2
fi
openssl x509 -in "$dir/admin.pem" -pubkey -noout | openssl pkey -pubin -outform DER | sha256sum |
    cut -d' ' -f1 >"$tmp/admin.peer_id"
mv "$tmp/admin.peer_id" "$dir/admin.peer_id"

chmod 0644 "$dir/ca.pem" "$dir/gateway.pem" "$dir/admin.pem" "$dir/admin.peer_id" "$dir/gateway.san"
chmod 0600 "$dir/ca.key" "$dir/gateway.key" "$dir/admin.key"
