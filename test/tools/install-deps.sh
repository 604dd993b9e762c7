#!/usr/bin/env bash
# Installs the DNS tools the end-to-end tests and benchmarks run (dig, kdig, dnsmasq, dnsperf, knotd) from Debian, only when
# they are missing. Safe to run repeatedly.
set -euo pipefail

# command:package pairs.
wanted=(dig:dnsutils kdig:knot-dnsutils dnsmasq:dnsmasq-base dnsperf:dnsperf knotd:knot)

# dnsmasq and knotd live in /usr/sbin, which is often not on a non-root PATH.
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

missing=()
for pair in "${wanted[@]}"; do
	have "${pair%%:*}" || missing+=("${pair#*:}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
export DEBIAN_FRONTEND=noninteractive
echo "install-deps.sh: installing ${missing[*]}" >&2
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

for pair in "${wanted[@]}"; do
	have "${pair%%:*}" || { echo "install-deps.sh: ${pair%%:*} still missing" >&2; exit 1; }
done
