#!/usr/bin/env bash
# Installs the Debian packages in deploy/local/packages.txt that are missing.
#
# The check is one dpkg-query call, so `make up` / `make test` pay nothing
# when everything is there. As root it runs `apt-get update` once and installs
# what is missing; as anyone else it prints the command to run and exits 1.
# (Debian's postgresql package may start a cluster of its own on port 5432;
# the project never uses it: its servers listen on unix sockets under .run/.
# syncthing-discosrv, which only the load suite runs, would start a system
# stdiscosrv on *:8443, the gateway's port, and coturn a turnserver on
# 3478, mm-signal's STUN port: their services are disabled here.)
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
    if [[ " ${missing[*]} " == *" syncthing-discosrv "* ]]; then
        echo "  sudo systemctl disable --now syncthing-discosrv.service   # it would take port 8443" >&2
    fi
    if [[ " ${missing[*]} " == *" coturn "* ]]; then
        echo "  sudo systemctl disable --now coturn.service   # it would take UDP 3478, mm-signal's STUN port" >&2
    fi
    exit 1
fi

echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
"${install_cmd[@]}"
if [[ " ${missing[*]} " == *" syncthing-discosrv "* ]] && [ -d /run/systemd/system ]; then
    echo "deps: disabling the system stdiscosrv (it would take port 8443; tests/load starts its own)" >&2
    systemctl disable --now syncthing-discosrv.service >&2 || true
fi
if [[ " ${missing[*]} " == *" coturn "* ]] && [ -d /run/systemd/system ]; then
    echo "deps: disabling the system coturn (it would take UDP 3478, mm-signal's STUN port; tests start their own)" >&2
    systemctl disable --now coturn.service >&2 || true
fi
