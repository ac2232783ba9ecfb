#!/bin/sh
# Installs the Debian packages tokentrace needs, and only those that are
# missing. Idempotent: with everything present it prints nothing and exits
# 0. `make` runs it before anything is compiled; `make test` runs it with
# --test for what only the tests use (a browser for the HTML report,
# Prometheus, the sanitizer and fuzzer runtime), so `make demo` does not
# pull those in.
set -eu

PKGS="make gcc clang llvm pkg-config libbpf-dev bpftool libelf-dev libdw-dev
zlib1g-dev libcjson-dev libcriterion-dev libssl-dev openssl libmicrohttpd-dev
libzstd-dev curl python3 procps iproute2"
if [ "${1:-}" = "--test" ]; then
	PKGS="$PKGS prometheus chromium libclang-rt-14-dev"
fi

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
