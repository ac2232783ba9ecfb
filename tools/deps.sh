#!/bin/sh
# Installs the Debian packages tokentrace needs to build and test, and only
# those that are missing. Idempotent: with everything present it prints
# nothing and exits 0. Run by `make` before anything is compiled.
set -eu

PKGS="make gcc clang llvm pkg-config libbpf-dev bpftool libelf-dev libdw-dev
zlib1g-dev libcjson-dev libcriterion-dev libssl-dev openssl libmicrohttpd-dev
libzstd-dev curl python3 procps iproute2 prometheus chromium libclang-rt-14-dev"

missing=""
for p in $PKGS; do
	s=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	case "$s" in
	*"install ok installed"*) ;;
	*) missing="$missing $p" ;;
	esac
done
[ -z "$missing" ] && exit 0

echo "tokentrace: installing missing Debian packages:$missing"
if [ "$(id -u)" -ne 0 ]; then
	echo "tokentrace: not root: install them with: sudo apt-get install$missing" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing
