#!/usr/bin/env bash
# Installs the Debian packages in deploy/local/packages.txt that are missing.
#
# The check is one dpkg-query call, so `make up` / `make test` pay nothing
# when everything is there. As root it runs `apt-get update` once and installs
# what is missing; as anyone else it prints the command to run and exits 1.
# (Debian's postgresql package may start a cluster of its own on port 5432;
# the project never uses it: its servers listen on unix sockets under .run/.)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
list="$here/packages.txt"

mapfile -t wanted < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' "$list")

# dpkg-query prints one line per package it knows; a package it has never
# heard of goes to stderr and makes it exit 1, which is fine: it is missing.
installed=$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' "${wanted[@]}" 2>/dev/null || true)
missing=()
for pkg in "${wanted[@]}"; do
    if ! grep -qx "ii  $pkg" <<<"$installed"; then
        missing+=("$pkg")
    fi
done
[ "${#missing[@]}" -eq 0 ] && exit 0

install_cmd=(apt-get install -y --no-install-recommends "${missing[@]}")
if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing Debian packages: ${missing[*]}" >&2
    echo "deps: install them with:" >&2
    echo "  sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive ${install_cmd[*]}" >&2
    exit 1
fi

echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
"${install_cmd[@]}"
