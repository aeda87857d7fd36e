#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The kernel's NBD client against testudod: a QEMU (TCG) guest on Debian's
# own kernel attaches volumes with the stock nbd-client and uses them
# (tests/e2e-kernel/init says what it does); the host checks what the guest
# cannot see (holes after fstrim, the data read back with nbdcopy, clean
# disconnects in the daemon's log).
#
# usage: run.sh [--full] [--fault kill|delete] [--host-fio] [SCRATCHDIR]
#   --full          every step, bigger volumes (make e2e-kernel); default is
#                   the short form that make check runs
#   --fault kill    SIGKILL testudod while the guest's fio runs
#   --fault delete  force-delete the fio volume (admin API) while fio runs
#                   (both must fail: the guest reports its I/O errors)
#   --host-fio      afterwards, the same fio jobs from the host (fio's nbd
#                   engine), for the figures side by side
# Exit 0 only when the guest said PASS and every host check passed.
set -u
cd "$(dirname "$0")/../.."
. tests/lib.sh
FORM=short FAULT= HOST_FIO=
while [ $# -gt 0 ]; do
	case "$1" in
	--full) FORM=full ;;
	--fault) FAULT=${2:?--fault kill|delete}; shift ;;
	--host-fio) HOST_FIO=1 ;;
	-*) echo "usage: run.sh [--full] [--fault kill|delete] [--host-fio] [SCRATCHDIR]" >&2; exit 2 ;;
	*) break ;;
	esac
	shift
done
case "$FAULT" in ""|kill|delete) ;; *) echo "run.sh: --fault kill or delete" >&2; exit 2 ;; esac
if [ "$FORM" = full ]; then
	MB=256 FIO_MB=64 TIMEOUT=${E2E_TIMEOUT:-900} DEV_SIZE=2G
else
	MB=64 FIO_MB=16 TIMEOUT=${E2E_TIMEOUT:-300} DEV_SIZE=1G
fi
T0=$(date +%s%N)
ms() { echo $((($(date +%s%N) - T0) / 1000000)); }
secs() { printf '%d.%01d' $(($1 / 1000)) $(($1 % 1000 / 100)); }

CACHE=$BUILD/e2e-kernel
KEEP=$#   # a scratch directory given: keep it
if [ $# -gt 0 ]; then
	D=$1
	mkdir -p "$D"
else
	mkdir -p "$CACHE"
	D=$(mktemp -d "$CACHE/run.XXXXXX")
fi
rm -f "$D"/dev.img "$D"/console "$D"/log
QEMU_PID=
cleanup() {
	[ -n "$QEMU_PID" ] && kill -KILL "$QEMU_PID" 2>/dev/null && wait "$QEMU_PID" 2>/dev/null
	[ -n "${NODE_PID:-}" ] && kill -KILL "$NODE_PID" 2>/dev/null && wait "$NODE_PID" 2>/dev/null
}
trap cleanup EXIT
bad=0
check() {   # check DESCRIPTION COMMAND...
	local what=$1; shift
	if "$@" >"$D/check.out" 2>&1; then
		echo "ok:     $what"
	else
		echo "FAILED: $what"
		sed 's/^/    /' "$D/check.out" | tail -n 15
		bad=$((bad + 1))
	fi
}

tests/e2e-kernel/build-initramfs.sh "$CACHE" || exit 1
# the per-run /init, appended to the cached archive (the kernel reads both)
mkdir -p "$D/initroot"
install -m 0755 tests/e2e-kernel/init "$D/initroot/init"
(cd "$D/initroot" && echo init | cpio --quiet -o -H newc -R 0:0) >"$D/init.cpio" || exit 1
cat "$CACHE/base.cpio" "$D/init.cpio" >"$D/initrd"

# the node: four volumes, debug log (every option and request)
"$BUILD"/testudo format "$D/dev.img" --size "$DEV_SIZE" $(format_args) >/dev/null || exit 1
for v in fs4k raw mc fs512; do
	make_volume "$D" "$v" "${MB}M" || exit 1
done
start_node "$D" -v || { echo "FAILED: testudod did not start"; tail "$D/log"; exit 1; }
echo "testudod pid $NODE_PID: nbd 127.0.0.1:$NBD_PORT, admin 127.0.0.1:$ADMIN_PORT, log $D/log"

# user networking, restricted: the guest reaches nothing but 10.0.2.100:10809.
# guestfwd's "tcp:" target is one chardev connected once, so it carries one
# connection only; "cmd:" runs a relay per connection (-C 4 needs four).
FWD="guestfwd=tcp:10.0.2.100:10809-cmd:busybox nc 127.0.0.1 $NBD_PORT"
: >"$D/console"
qemu-system-x86_64 -nodefaults -no-user-config -display none -no-reboot \
	-m 1024 -smp 2 -serial "file:$D/console" \
	-kernel "$CACHE/vmlinuz" -initrd "$D/initrd" \
	-append "console=ttyS0 quiet loglevel=4 panic=-1 mitigations=off e2e.form=$FORM e2e.mb=$MB e2e.fio=$FIO_MB${FAULT:+ e2e.only=fio}" \
	-netdev "user,id=n0,restrict=on,$FWD" -device virtio-net-pci,netdev=n0,romfile= \
	</dev/null >"$D/qemu.out" 2>&1 &
QEMU_PID=$!
echo "qemu pid $QEMU_PID, console $D/console, timeout ${TIMEOUT}s"

# the fault, once the guest's fio has sent a few hundred writes
fault_done=
do_fault() {
	local base
	grep -q '^E2E-STEP fio-raw' "$D/console" || return 0
	base=${fault_base:-}
	if [ -z "$base" ]; then
		fault_base=$(grep -c ': cmd 1 ' "$D/log")
		return 0
	fi
	[ $(($(grep -c ': cmd 1 ' "$D/log") - base)) -ge 300 ] || return 0
	fault_done=1
	if [ "$FAULT" = kill ]; then
		echo "fault: SIGKILL testudod (pid $NODE_PID) during the guest's fio, at $(secs "$(ms)")s"
		kill_node
		NODE_PID=
	else
		echo "fault: DELETE /v1/volumes/raw?force=1 during the guest's fio, at $(secs "$(ms)")s"
		local code= deadline=$((SECONDS + 10))
		while [ $SECONDS -lt $deadline ]; do
			code=$(curl -s -o "$D/delete.out" -w '%{http_code}' -X DELETE \
				"http://127.0.0.1:$ADMIN_PORT/v1/volumes/raw?force=1")
			[ "$code" = 200 ] && break
			sleep 0.1   # 409: requests were still in flight
		done
		echo "fault: DELETE answered $code $(cat "$D/delete.out")"
	fi
}

boot_ms= deadline=$((SECONDS + TIMEOUT)) timed_out= failed_step=
while kill -0 "$QEMU_PID" 2>/dev/null; do
	[ -z "$boot_ms" ] && grep -q '^E2E-BOOTED' "$D/console" && boot_ms=$(ms)
	[ -n "$FAULT" ] && [ -z "$fault_done" ] && do_fault
	grep -q '^E2E-VERDICT' "$D/console" && [ -n "$(grep -o 'reboot: Power down' "$D/console")" ] && break
	if [ $SECONDS -ge $deadline ]; then
		timed_out=1
		break
	fi
	sleep 0.05
done
# the guest powers itself off; give it a moment, then make sure
wait_for "qemu to exit" 10 bash -c "! kill -0 $QEMU_PID"
kill -KILL "$QEMU_PID" 2>/dev/null
wait "$QEMU_PID" 2>/dev/null
QEMU_PID=
guest_ms=$(ms)
cp "$D/log" "$D/guest.log"   # the daemon's log of the guest's connections only

# what the guest said
tr -d '\r' <"$D/console" | grep -a '^E2E-' >"$D/guest"
grep -E '^E2E-(STEP|OK|FAIL|OUT|DMESG|VERDICT)' "$D/guest" | sed 's/^/guest: /'
verdict=$(sed -n 's/^E2E-VERDICT //p' "$D/guest")
if [ -n "$timed_out" ]; then
	echo "FAILED: the guest did not finish in ${TIMEOUT}s (killed); last lines:"
	tr -d '\r' <"$D/console" | tail -n 15 | sed 's/^/    /'
	bad=$((bad + 1))
elif [ "$verdict" != PASS ]; then
	failed_step=$(sed -n 's/^E2E-FAIL \([^:]*\):.*/\1/p' "$D/guest" | head -1)
	echo "FAILED: the guest failed at step '$failed_step'"
	[ -s "$D/guest" ] || { echo "  console:"; tail -n 20 "$D/console" | sed 's/^/    /'; }
	bad=$((bad + 1))
fi
val() { sed -n "s/^E2E-DATA $1 //p" "$D/guest" | head -1; }

if [ "$verdict" = PASS ] && [ -n "${NODE_PID:-}" ]; then
	U=nbd://127.0.0.1:$NBD_PORT
	# the trimmed ranges are holes: at least 90% of what fstrim says it trimmed
	trimmed=$(val fs4k.trimmed)
	holes=$(nbdinfo --map --totals "$U/fs4k" 2>"$D/map.err" | awk '$4 ~ /hole/ {s += $1} END {print s + 0}')
	echo "fstrim trimmed $trimmed bytes; the host sees $holes bytes of holes in fs4k"
	check "fstrim: the host sees the trimmed ranges as holes (nbdinfo --map)" \
		test "$holes" -ge $((${trimmed:-1} * 9 / 10))
	check "detached data reads back from the host (nbdcopy, sha256 as in the guest)" \
		bash -c "[ \"\$(nbdcopy '$U/fs4k' - | sha256sum | cut -d' ' -f1)\" = '$(val fs4k.sha256)' ]"
	if [ -n "$HOST_FIO" ]; then
		# the guest's fio jobs, from the host through fio's nbd engine
		for j in "rand4k randwrite 4k" "seq128k write 128k"; do
			set -- $j
			fio --name="host-$1" --ioengine=nbd --uri="$U/raw" --iodepth=16 --rw="$2" --bs="$3" \
				--size="${FIO_MB}M" --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 \
				--minimal >"$D/hostfio.out" 2>&1 ||
				{ echo "FAILED: host fio $1"; tail "$D/hostfio.out"; bad=$((bad + 1)); }
			awk -F';' -v n="$1" 'NF > 50 {printf "E2E-DATA fio host %s write_kibs=%s write_iops=%s read_kibs=%s read_iops=%s\n", n, $48, $49, $7, $8}' \
				"$D/hostfio.out" >>"$D/guest"
		done
	fi
fi
if [ -n "${NODE_PID:-}" ]; then
	check "testudod: SIGTERM, clean exit" stop_node
	NODE_PID=
fi
# every connection that got as far as transmission hung up with NBD_CMD_DISC
conns=$(grep -c ': volume [^ ]*, [0-9]* bytes' "$D/guest.log")
discs=$(grep -c 'clean disconnect (NBD_CMD_DISC)' "$D/guest.log")
echo "daemon log: $conns connections reached transmission, $discs disconnected cleanly"
[ -z "$FAULT" ] && check "every connection ended with NBD_CMD_DISC" test "$conns" -gt 0 -a "$conns" = "$discs"

echo
echo "-- what the kernel client sent (from the daemon's debug log)"
tests/e2e-kernel/negotiated.sh "$D/guest.log"
if grep -q '^E2E-DATA fio' "$D/guest"; then
	echo
	echo "-- fio, $FIO_MB MiB per job, iodepth 16, verify=crc32c (write phase, then the verify reads)"
	printf '%-14s %-6s %12s %10s %12s %10s\n' job where "write KiB/s" "write IOPS" "read KiB/s" "read IOPS"
	sed -n 's/^E2E-DATA fio \([a-z]*\) \([^ ]*\) write_kibs=\([0-9]*\) write_iops=\([0-9]*\) read_kibs=\([0-9]*\) read_iops=\([0-9]*\).*/\2 \1 \3 \4 \5 \6/p' "$D/guest" |
		sort -s -k1,1 | while read -r name where wk wi rk ri; do
			printf '%-14s %-6s %12s %10s %12s %10s\n' "$name" "$where" "$wk" "$wi" "$rk" "$ri"
		done
	echo "(guest: libaio, direct, on /dev/nbd0; host: fio's nbd engine on the same volume)"
fi
echo
echo "boot: $(secs "${boot_ms:-0}")s to the guest's /init; guest done at $(secs "$guest_ms")s; total $(secs "$(ms)")s"
rm -rf "$D/initrd" "$D/init.cpio" "$D/initroot"   # a copy of the cached guest; the logs stay
if [ "$bad" -eq 0 ]; then
	echo "e2e-kernel: PASS ($FORM), boot $(secs "${boot_ms:-0}")s, total $(secs "$(ms)")s"
	[ "$KEEP" -gt 0 ] || rm -rf "$D"
	exit 0
fi
ioerr=$(tr -d '\r' <"$D/console" | grep -c 'I/O error, dev nbd')
echo "e2e-kernel: FAIL ($FORM${FAULT:+, fault $FAULT})${failed_step:+ at step $failed_step}, the guest's kernel logged $ioerr I/O errors, $bad problem(s); files in $D"
exit 1
