#!/usr/bin/env bash
# Development certificates for llm-api-guard (TLS 1.3 / mTLS tests and envoy/envoy-tls.yaml).
#
# Usage: scripts/gen_certs.sh DIR        (default DIR: certs)
#
# Creates, with openssl only (EC P-256 keys, 30 days validity):
#   ca.pem / ca.key                     dev CA ("llm-api-guard dev CA")
#   server.pem / server.key             server cert, SAN DNS:localhost, IP:127.0.0.1 (serverAuth)
#   client.pem / client.key             client cert, SAN URI:spiffe://example.org/ns/apps/sa/client,
#                                       DNS:client.example.org (clientAuth), signed by the dev CA
#   other-client.pem / other-client.key client cert, SAN URI:spiffe://example.org/ns/apps/sa/other,
#                                       signed by the dev CA
#   untrusted-ca.pem / untrusted-ca.key a second, unrelated CA
#   untrusted.pem / untrusted.key       client cert (SAN URI:spiffe://example.org/ns/apps/sa/client)
#                                       signed by the untrusted CA: must be refused by Envoy
#   server-chain.pem                    server.pem followed by ca.pem
#
# Idempotent: if every file exists and the certificates are valid for at least one more day,
# nothing is done. Otherwise the whole set is regenerated (so CA and leaves always match).
set -euo pipefail

DIR="${1:-certs}"
DAYS=30
mkdir -p "$DIR"
cd "$DIR"

FILES=(ca.pem ca.key server.pem server.key server-chain.pem client.pem client.key
       other-client.pem other-client.key untrusted-ca.pem untrusted-ca.key untrusted.pem untrusted.key)

complete=1
for f in "${FILES[@]}"; do
  [[ -s "$f" ]] || { complete=0; break; }
done
if [[ $complete == 1 ]]; then
  fresh=1
  for c in ca.pem server.pem client.pem other-client.pem untrusted-ca.pem untrusted.pem; do
    openssl x509 -in "$c" -noout -checkend 86400 >/dev/null 2>&1 || { fresh=0; break; }
  done
  if [[ $fresh == 1 ]]; then
    echo "gen_certs: certificates in $PWD are present and valid; nothing to do"
    exit 0
  fi
fi

umask 077
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# make_ca NAME CN
make_ca() {
  newkey "$1.key"
  openssl req -x509 -new -key "$1.key" -sha256 -days "$DAYS" -subj "/O=llm-api-guard dev/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" \
    -out "$1.pem"
}

# make_leaf NAME CA CN EKU SAN
make_leaf() {
  local name=$1 ca=$2 cn=$3 eku=$4 san=$5
  newkey "$name.key"
  openssl req -new -key "$name.key" -subj "/O=llm-api-guard dev/CN=$cn" -out "$TMP/$name.csr"
  cat >"$TMP/$name.ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=$eku
subjectAltName=$san
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EOF
  openssl x509 -req -in "$TMP/$name.csr" -CA "$ca.pem" -CAkey "$ca.key" -CAcreateserial \
    -CAserial "$TMP/$ca.srl" -days "$DAYS" -sha256 -extfile "$TMP/$name.ext" -out "$name.pem" 2>/dev/null
}

make_ca ca "llm-api-guard dev CA"
make_ca untrusted-ca "untrusted dev CA"
make_leaf server ca localhost serverAuth "DNS:localhost,IP:127.0.0.1"
make_leaf client ca client clientAuth "URI:spiffe://example.org/ns/apps/sa/client,DNS:client.example.org"
make_leaf other-client ca other-client clientAuth "URI:spiffe://example.org/ns/apps/sa/other"
make_leaf untrusted untrusted-ca client clientAuth "URI:spiffe://example.org/ns/apps/sa/client"
cat server.pem ca.pem >server-chain.pem
# Keys readable by the user running Envoy (also inside a container with another uid).
chmod 0644 ./*.pem ./*.key

openssl verify -CAfile ca.pem server.pem client.pem other-client.pem >/dev/null
echo "gen_certs: wrote dev CA, server, client, other-client and untrusted certificates to $PWD"
