#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# A primary whose device fails gives up the role (issue 16 item 9): three
# nodes on loopback, a volume on three replicas with n1 primary, and n1's
# device file on a 24 MiB tmpfs (in a private mount namespace) under a
# 96 MiB sparse device. Writes through n1 fill the file system: the
# kernel fails a log write and n1's engine refuses every write from then
# on. With no one acting, the role must move to an in-sync replica within
# a few seconds; writes through every node, n1 included, succeed again;
# every write acknowledged before and after reads back; the replicas
# that can store writes end in-sync and identical. Needs root and
# unshare -m.
# usage: tests/primary_fail.sh SCRATCHDIR
set -u
cd "$(dirname "$0")/.."
. tests/lib.sh
D=${1:?usage: primary_fail.sh SCRATCHDIR}
if [ "$(id -u)" != 0 ] || ! command -v unshare >/dev/null || ! unshare -m true 2>/dev/null; then
	echo "primary_fail: SKIP (needs root and unshare -m)"
	exit 77
fi
if [ "${PRIMARY_FAIL_INNER:-}" != 1 ]; then
	exec env PRIMARY_FAIL_INNER=1 unshare -m "$0" "$@"
fi
rm -rf "$D"
mkdir -p "$D/mnt" "$D/n1"
n=0 bad=0
STEP_OK=1
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
M=$D/mnt
mount -t tmpfs -o size=24M none "$M" || { echo "primary_fail: cannot mount a tmpfs"; exit 1; }
cleanup() {
	for p in "${CL_PID[@]}"; do [ -n "$p" ] && kill -CONT "$p" 2>/dev/null && kill "$p" 2>/dev/null; done
	for p in "${CL_PID[@]}"; do [ -n "$p" ] && wait "$p" 2>/dev/null; done
	umount "$M" 2>/dev/null
	return 0
}
trap cleanup EXIT

# the primary as nodes n2 and n3 both see it is not n1
moved() { local p2 p3; p2=$(field 2 v primary) && p3=$(field 3 v primary) && [ "$p2" != n1 ] && [ "$p2" = "$p3" ]; }
# write_ok NODE JOURNAL MIB: 4 MiB written through NODE in [MIB, MIB+8) MiB
# (a range of its own: a later journal's writes do not overwrite it), no error
write_ok() {
	"$BUILD"/testudo-bench "$(uri "$1" v)" --rw randwrite --bs 64k --qd 8 --bytes 4M --range "$3M:8M" --verify "$2" \
		--quiet >"$D/w.out" 2>&1 || { cat "$D/w.out"; return 1; }
}
read_back() {   # read_back NODE JOURNAL
	"$BUILD"/testudo-bench verify "$(uri "$1" v)" --journal "$2" --qd 16 >"$D/verify.out" 2>&1
	local rc=$?
	cat "$D/verify.out"
	[ $rc = 0 ] && grep -q "verify: [1-9][0-9]* blocks checked, 0 lost" "$D/verify.out"
}

# n1's device on the small file system (the state file stays beside the link)
"$BUILD"/testudo format "$M/dev.img" --size 96M --segment-size 1M --sparse >/dev/null || exit 1
ln -s "$M/dev.img" "$D/n1/dev.img"
start_cluster "$D" 3 || { echo "FAILED: the cluster did not start"; exit 1; }
wait_for "peers up" 10 all_up
step "volume v (64 MiB) on three replicas, primary n1" bash -c \
	"'$BUILD'/testudo --admin 127.0.0.1:${CL_ADMIN[1]} volume create v 64M --replicas 3 | grep -q 'primary n1'"
step "4 MiB acknowledged through n1 while it has room" write_ok 1 "$D/j1" 0

# then more than the file system holds, through n1: its log write fails
"$BUILD"/testudo-bench "$(uri 1 v)" --rw write --bs 1M --qd 8 --bytes 64M --range 32M:32M --verify "$D/j2" \
	--io-timeout 30 --quiet >"$D/fill.out" 2>&1
rc=$?
step "filling n1's file system: the writes past the room fail (exit $rc)" bash -c \
	"[ $rc = 3 ] || { cat '$D/fill.out'; false; }"
step "n1's engine failed on its device" grep -q "log write failed: No space left on device" "$D/n1/log"
T0=$SECONDS
step "the primary role leaves n1 within 10 s, with no one acting" wait_for "a new primary" 10 moved
echo "    after $((SECONDS - T0)) s: primary $(field 2 v primary), epoch $(field 2 v epoch); $(states 2 v)"
if moved; then
	P=$(field 2 v primary | tr -dc '0-9') O=$((5 - $(field 2 v primary | tr -dc '0-9')))
	step "writes through the new primary n$P succeed" write_ok "$P" "$D/j3" 8
	step "writes through n1 (forwarded) succeed" write_ok 1 "$D/j4" 16
	step "writes through n$O succeed" write_ok "$O" "$D/j5" 24
	for j in 1 2 3 4 5; do
		step "every write of journal j$j acknowledged reads back through n$P" read_back "$P" "$D/j$j"
	done
	in_sync() { states "$1" v | grep -q "$2=in-sync"; }
	step "n1 is not in-sync: its copy cannot take writes" bash -c "! grep -q n1=in-sync <<<'$(states "$P" v)'"
	step "n$O ends in-sync" wait_for "n$O in-sync" 30 in_sync "$P" "n$O"
	# n1 answers a verify with its engine's error: n$P and n$O must match
	step "volume verify through n$P: n$P and n$O checked, no difference" bash -c \
		"'$BUILD'/testudo --admin 127.0.0.1:${CL_ADMIN[$P]} volume verify v | tee '$D/vv.out';
		 grep -q '^  n$P  *checked' '$D/vv.out' && grep -q '^  n$O  *checked' '$D/vv.out' && ! grep -q 'differs at' '$D/vv.out'"
	stop_two() { stop_cluster_node "$P" && stop_cluster_node "$O"; }
	step "n$P and n$O stop cleanly" stop_two
else
	# the role stayed: what a client of n1 sees, then the rest cannot be run
	step "writes through n1 succeed" write_ok 1 "$D/j4" 16
	step "the acknowledged writes read back through n2" read_back 2 "$D/j1"
	bad=$((bad + 1)) n=$((n + 1))
	echo "FAILED: the checks that need a new primary were not run"
	stop_two() { stop_cluster_node 2 && stop_cluster_node 3; }
	step "n2 and n3 stop cleanly" stop_two
fi
kill -TERM "${CL_PID[1]}"
wait "${CL_PID[1]}"
rc=$?
CL_PID[1]=
step "n1, its engine failed, stops on SIGTERM (exit $rc)" bash -c "[ $rc != 137 ]"
step "no sanitizer report in any node's log" bash -c \
	"! grep -E -m3 -H 'ERROR: (Address|Leak)Sanitizer|runtime error:' '$D'/n*/log"
echo "primary_fail: $((n - bad)) of $n checks passed"
[ $bad = 0 ]
