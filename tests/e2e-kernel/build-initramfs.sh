#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds the e2e-kernel guest from the host's Debian packages, cached:
#   OUTDIR/vmlinuz     the linux-image-amd64 kernel
#   OUTDIR/base.cpio   an uncompressed initramfs (newc) without /init: static
#                      busybox; nbd-client, mkfs.ext4, fio and fstrim with the
#                      shared libraries ldd names; the kernel modules for NBD,
#                      virtio-net, ext4 and crc32c with what modinfo says they
#                      need, in load order in /modules.load
#   OUTDIR/key         what the cache was built from
# The guest's /init (tests/e2e-kernel/init) is packed per run by run.sh and
# appended, so editing it never rebuilds this. usage: build-initramfs.sh OUTDIR
set -euo pipefail
OUT=${1:?usage: build-initramfs.sh OUTDIR}
mkdir -p "$OUT"

# the newest installed Debian kernel that has nbd.ko
KVER=
for d in $(ls -d /lib/modules/*/ 2>/dev/null | sort -V -r); do
	k=$(basename "$d")
	if [ -e "/boot/vmlinuz-$k" ] && modinfo -k "$k" -n nbd >/dev/null 2>&1; then
		KVER=$k
		break
	fi
done
[ -n "$KVER" ] || { echo "build-initramfs: no /boot/vmlinuz-* with nbd.ko; run 'make deps' (linux-image-amd64)" >&2; exit 1; }

BINS=(/usr/sbin/nbd-client /usr/sbin/mkfs.ext4 /usr/bin/fio /usr/sbin/fstrim)
# nbd; virtio-net and its PCI transport; ext4 (jbd2 wants crypto-crc32c); crc32c itself
MODS=(nbd virtio_pci virtio_net crc32c_generic ext4)
for b in "${BINS[@]}" /usr/bin/busybox; do
	[ -x "$b" ] || { echo "build-initramfs: $b missing; run 'make deps'" >&2; exit 1; }
done

# what goes in; the cache key is their sizes and times, and this script
libs_of() {   # ldd prints "name => /path (addr)" or "/path (addr)" for the loader
	ldd "$1" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'
}
inputs=("/boot/vmlinuz-$KVER" /usr/bin/busybox /etc/mke2fs.conf)
for b in "${BINS[@]}"; do
	inputs+=("$b" $(libs_of "$b"))
done
for m in "${MODS[@]}"; do
	inputs+=("$(modinfo -k "$KVER" -n "$m")")
done
key="$KVER $({ stat -L -c '%n %s %Y' "${inputs[@]}"; cat "$0"; } | sha256sum | cut -c1-32)"
if [ -s "$OUT/base.cpio" ] && [ -s "$OUT/vmlinuz" ] && [ "$(cat "$OUT/key" 2>/dev/null)" = "$key" ]; then
	echo "build-initramfs: cached ($KVER)"
	exit 0
fi

ROOT=$(mktemp -d "$OUT/root.XXXXXX")
trap 'rm -rf "$ROOT"' EXIT
mkdir -p "$ROOT"/usr/{bin,sbin,lib,lib64} "$ROOT"/{dev,proc,sys,mnt,tmp,etc,run}
for l in bin sbin lib lib64; do ln -s "usr/$l" "$ROOT/$l"; done

copy() {   # copy FILE: to the same path inside the guest, following links
	local dst=$ROOT$1
	[ -e "$dst" ] && return 0
	mkdir -p "$(dirname "$dst")"
	cp -L "$1" "$dst"
}
cp /usr/bin/busybox "$ROOT/usr/bin/busybox"
for b in "${BINS[@]}"; do
	copy "$b"
	for lib in $(libs_of "$b"); do
		copy "$lib"
	done
done
cp /etc/mke2fs.conf "$ROOT/etc/mke2fs.conf"   # mkfs picks what it picks on the host

# modules: dependencies before the module, each once; softdep "pre:" too
declare -A seen=()
order=()
add_mod() {
	local m=${1//-/_} dep
	[ -n "${seen[$m]:-}" ] && return 0
	seen[$m]=1
	for dep in $(modinfo -k "$KVER" -F depends "$m" | tr ',' ' '); do
		add_mod "$dep"
	done
	for dep in $(modinfo -k "$KVER" -F softdep "$m" | sed -n 's/.*pre: *//p'); do
		[ "$dep" = crypto-crc32c ] && dep=crc32c_generic   # an alias; the generic one works on any CPU
		add_mod "$dep"
	done
	local f
	f=$(modinfo -k "$KVER" -n "$m")
	case "$f" in
	/*) copy "$f"; order+=("$f") ;;
	*) ;; # built in
	esac
}
for m in "${MODS[@]}"; do add_mod "$m"; done
printf '%s\n' "${order[@]}" >"$ROOT/modules.load"

(cd "$ROOT" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) >"$OUT/base.cpio.tmp"
cp "/boot/vmlinuz-$KVER" "$OUT/vmlinuz"
mv "$OUT/base.cpio.tmp" "$OUT/base.cpio"
echo "$key" >"$OUT/key"
echo "build-initramfs: built for $KVER: $(du -m "$OUT/base.cpio" | cut -f1) MiB, modules: $(basename -a "${order[@]}" | tr '\n' ' ')"
