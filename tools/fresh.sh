#!/bin/sh
# fresh.sh - the README's two commands on a truly fresh Debian 12 (`make fresh`).
#
# The contract is that on a fresh Debian 12 machine, as root, `make demo`
# runs the main job and `make test` passes, with nothing installed by hand.
# A development machine has long stopped being fresh (packages installed,
# tracefs mounted, files left in /tmp), so this script makes one: a minimal
# Debian 12 root with debootstrap (variant minbase, plus `make` alone,
# since nobody can type `make demo` without it), this tree copied in (the
# files git tracks or would track: no build/), /proc, /sys and /dev bound,
# and no tracefs mounted, as on a host that has just booted. Then, inside
# it (chroot, clean environment), `make demo` and then `make test`, each
# with its log and a one-line outcome.
#
# In:  root; Debian's package mirror (read from this host's apt sources,
#      or FRESH_MIRROR). FRESH_STEPS picks the steps ("demo test"),
#      FRESH_KEEP=1 keeps the root afterwards.
# Out: "fresh: make demo: passed (N s)" or "... FAILED (exit N)" per step,
#      the last lines of each log (whole in build/fresh/STEP.log), exit 0
#      only when every step passed.
# Assumes: the host kernel is what the root runs on (eBPF, BTF); the root
#      is made anew every run (downloaded packages are cached in
#      build/fresh/cache, which changes nothing of what the root holds).
#      Everything runs in a private mount namespace, so the binds, and any
#      tracefs the demo mounts inside, vanish with it.
set -eu

STEPS=${FRESH_STEPS:-"demo test"}
TOP=$(cd "$(dirname "$0")/.." && pwd)
CACHE="$TOP/build/fresh/cache"
LOGS="$TOP/build/fresh"

say() { printf 'fresh: %s\n' "$*"; }
die() { printf 'fresh: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot, mounts)"

# Once, outside: re-run in a private mount namespace.
if [ "${FRESH_INNER:-}" != 1 ]; then
	command -v unshare >/dev/null || die "unshare(1) is missing (util-linux)"
	FRESH_INNER=1 exec unshare --mount --propagation private sh "$0" "$@"
fi

if ! command -v debootstrap >/dev/null; then
	say "installing debootstrap"
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap \
		>/dev/null
fi

# The mirror this host's apt uses for bookworm.
mirror() {
	if [ -n "${FRESH_MIRROR:-}" ]; then
		echo "$FRESH_MIRROR"
		return
	fi
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		awk '/^URIs:/ { u = $2 } /^Suites:/ && / bookworm( |$)/ { s = 1 }
		     /^$/ { if (u && s) { print u; exit } u = ""; s = 0 }
		     END { if (u && s) print u }' "$f"
	done | head -n 1 | grep . && return
	awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' \
		/etc/apt/sources.list 2>/dev/null | grep . ||
		die "no bookworm mirror in this host's apt sources: set FRESH_MIRROR"
}

MIRROR=$(mirror)
ROOT=$(mktemp -d /var/tmp/tt-fresh.XXXXXX)
chmod 0755 "$ROOT"	# it becomes /, which everyone may enter
cleanup() {
	for m in dev/shm dev/pts dev sys/fs/cgroup sys proc tmp; do
		umount -l "$ROOT/$m" 2>/dev/null || true
	done
	umount -l "$ROOT" 2>/dev/null || true
	if [ "${FRESH_KEEP:-}" = 1 ]; then
		say "kept $ROOT"
	else
		rm -rf --one-file-system "$ROOT"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$CACHE"
say "debootstrap bookworm (minbase + make) into $ROOT"
t0=$(date +%s)
debootstrap --variant=minbase --include=make --cache-dir="$CACHE" \
	bookworm "$ROOT" "$MIRROR" >"$ROOT.debootstrap.log" 2>&1 || {
	tail -n 20 "$ROOT.debootstrap.log" >&2
	rm -f "$ROOT.debootstrap.log"
	die "debootstrap failed"
}
rm -f "$ROOT.debootstrap.log"
say "root made in $(( $(date +%s) - t0 )) s"

# The sources the root's apt-get update reads: the same mirror, and its
# security suite when this host has one.
{
	echo "deb $MIRROR bookworm main"
	echo "deb $MIRROR bookworm-updates main"
} >"$ROOT/etc/apt/sources.list"
sec=$(grep -h -A3 -E '^URIs:.*security' /etc/apt/sources.list.d/*.sources \
	2>/dev/null | awk '/^URIs:/ { print $2; exit }' || true)
[ -n "$sec" ] && echo "deb $sec bookworm-security main" \
	>>"$ROOT/etc/apt/sources.list"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true

mkdir -p "$ROOT/root/tokentrace"
(cd "$TOP" && git ls-files -co --exclude-standard -z |
	xargs -0 tar cf - --) | tar xf - -C "$ROOT/root/tokentrace"

mount --bind "$ROOT" "$ROOT"	# a root that is a mount point, as a host's is
mount -t proc proc "$ROOT/proc"
mount --bind /sys "$ROOT/sys"		# without its submounts: no tracefs
if [ -d /sys/fs/cgroup ] && mountpoint -q /sys/fs/cgroup; then
	mount --bind /sys/fs/cgroup "$ROOT/sys/fs/cgroup"
fi
mount --bind /dev "$ROOT/dev"
mount -t devpts -o newinstance,ptmxmode=0666 devpts "$ROOT/dev/pts" ||
	true
# /tmp and /dev/shm as a booted host has them: everyone may write, sticky.
mount -t tmpfs -o mode=1777 tmpfs "$ROOT/dev/shm"
mount -t tmpfs -o mode=1777 tmpfs "$ROOT/tmp"
if [ -e "$ROOT/sys/kernel/tracing/events" ]; then
	die "tracefs is visible inside the root; it should not be"
fi
say "tracefs is not mounted inside the root (as on a freshly booted host)"

failed=0
for step in $STEPS; do
	log="$LOGS/$step.log"
	t0=$(date +%s)
	rc=0
	chroot "$ROOT" /usr/bin/env -i HOME=/root TERM=dumb \
		PATH=/usr/sbin:/usr/bin:/sbin:/bin \
		sh -c "cd /root/tokentrace && make $step" \
		</dev/null >"$log" 2>&1 || rc=$?
	dt=$(( $(date +%s) - t0 ))
	if [ $rc = 0 ]; then
		say "make $step: passed ($dt s)"
	else
		say "make $step: FAILED (exit $rc, $dt s)"
		failed=1
	fi
	echo "---- last lines of make $step ----"
	tail -n 15 "$log"
	echo "----"
	say "log: $log"
done
exit $failed
