#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs the Debian packages Testudo builds and tests with, only those
# missing. Runs as root (or through sudo when it is there).
set -eu
PKGS=(
	build-essential clang pkg-config        # compilers (gcc and clang)
	libuv1-dev liburing-dev liblz4-dev libxxhash-dev # engine libraries
	libpmem-dev libcmocka-dev libjansson-dev
	libnbd-bin python3-libnbd qemu-utils     # NBD interop tests: nbdinfo, nbdcopy, nbdsh, qemu-img, qemu-io
	nbdkit nbd-server nbd-client            # peers for the benchmark
	fio time                                # bench/engine and bench/accuracy compare against fio; /usr/bin/time
	util-linux python3 curl                 # losetup, flock; JSON checks and the admin API in tests
	qemu-system-x86 linux-image-amd64       # tests/e2e-kernel: a TCG guest on Debian's kernel (nbd.ko)
	busybox-static e2fsprogs cpio kmod      #   its initramfs: busybox, mkfs.ext4, packed with cpio; modinfo
)
missing=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
	echo "deps: all ${#PKGS[@]} packages present"
	exit 0
fi
SUDO=
[ "$(id -u)" = 0 ] || SUDO=sudo
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "deps: done"
