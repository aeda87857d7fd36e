#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Runs every test once against the binaries in $BUILD (default build/).
# Each test is a command; its name, result and time are printed, and the
# run ends with "N passed, N failed". Non-zero exit if any failed.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
export BUILD
# the sanitizer pass looks for memory errors, which fewer rounds find as
# well; the plain pass keeps the full counts (and CI's run well under 15 min)
if [ -n "${SANITIZER:-}" ]; then
	CRASH_ITERATIONS=${CRASH_ITERATIONS:-10}
	CLEAN_OVERWRITE=${CLEAN_OVERWRITE:-2}
fi
CRASH_ITERATIONS=${CRASH_ITERATIONS:-25}
CLEAN_OVERWRITE=${CLEAN_OVERWRITE:-5}
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/testudo-test.XXXXXX")
LOG=$SCRATCH/log
passed=0 failed=0 skipped=0
failed_names=()
trap 'rm -rf "$SCRATCH"' EXIT

# sanitizer reports fail the run: abort on the first one
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

run() {
	local name=$1; shift
	local t0=$SECONDS
	if "$@" >"$LOG" 2>&1; then
		passed=$((passed + 1))
		printf 'PASS %-36s %4ss  %s\n' "$name" $((SECONDS - t0)) "$(grep -E '^(crash|powercut|corrupt|midcut|cleaner|cli|nbd|admin|enospc|bench|cluster|lifecycle|limits|replication|replication_big|resync_kill|primary_fail|nbd_fuzz|e2e-kernel|accuracy):|PASSED|^boot: ' "$LOG" | tail -1)"
	else
		failed=$((failed + 1))
		failed_names+=("$name")
		printf 'FAIL %-36s %4ss\n' "$name" $((SECONDS - t0))
		show_failure
	fi
}

# what a failed test printed: its failed steps first (CI keeps only part
# of a long output), then the end of its log
show_failure() {
	grep -n -A16 -E '^FAILED|ERROR: .*Sanitizer|runtime error:' "$LOG" | head -n 60 | sed 's/^/    /'
	echo "    -- last lines:"
	tail -n 30 "$LOG" | sed 's/^/    /'
}

# a test that must FAIL: the witness catches a broken engine
run_expect_fail() {
	local name=$1; shift
	local t0=$SECONDS
	if "$@" >"$LOG" 2>&1; then
		failed=$((failed + 1))
		failed_names+=("$name")
		printf 'FAIL %-36s %4ss  (passed, but must detect the loss)\n' "$name" $((SECONDS - t0))
	else
		passed=$((passed + 1))
		printf 'PASS %-36s %4ss  (loss detected, as it must be)\n' "$name" $((SECONDS - t0))
	fi
}

# a test that must FAIL, and say why: its output must match PATTERN (grep -E)
run_must_fail() {
	local name=$1 pattern=$2; shift 2
	local t0=$SECONDS
	if "$@" >"$LOG" 2>&1; then
		failed=$((failed + 1))
		failed_names+=("$name")
		printf 'FAIL %-36s %4ss  (passed, but must fail)\n' "$name" $((SECONDS - t0))
	elif ! grep -qE "$pattern" "$LOG"; then
		failed=$((failed + 1))
		failed_names+=("$name")
		printf 'FAIL %-36s %4ss  (failed, but not with /%s/)\n' "$name" $((SECONDS - t0)) "$pattern"
		show_failure
	else
		passed=$((passed + 1))
		printf 'PASS %-36s %4ss  %s\n' "$name" $((SECONDS - t0)) "$(grep -oE "$pattern" "$LOG" | tail -1)"
	fi
}

skip() {
	skipped=$((skipped + 1))
	printf 'SKIP %-36s       %s\n' "$1" "$2"
}

echo "== unit tests ($BUILD)"
for t in "$BUILD"/tests/unit/*; do
	[ -x "$t" ] || continue
	run "unit/$(basename "$t")" env TMPDIR="$SCRATCH" "$t"
done

echo "== command line"
run "cli" tests/cli.sh "$SCRATCH/cli"

echo "== testudod"
run "nbd fuzz corpus ($(ls tests/fuzz/corpus | wc -l) inputs)" env TMPDIR="$SCRATCH" "$BUILD"/tests/nbd_fuzz tests/fuzz/corpus/*
run "nbd interop, protocol, restart" tests/nbd.sh "$SCRATCH/nbd"
rm -rf "$SCRATCH/nbd"
if [ -x tests/admin.sh ]; then
	run "admin API and online CLI" tests/admin.sh "$SCRATCH/admin"
	rm -rf "$SCRATCH/admin"
fi
run "limits: hostile reads, idle sockets, peer handshakes" tests/limits.sh "$SCRATCH/limits"
rm -rf "$SCRATCH/limits"
if [ "$(id -u)" = 0 ] && unshare -m true 2>/dev/null; then
	run "device file system full: errors, no loss" env BUILD="$BUILD" tests/enospc.sh "$SCRATCH/enospc"
	rm -rf "$SCRATCH/enospc"
else
	skip "device file system full: errors, no loss" "needs root and unshare -m (a tmpfs in a private mount namespace)"
fi

echo "== cluster"
run "cluster: peers, handshake, liveness" tests/cluster.sh "$SCRATCH/cluster"
rm -rf "$SCRATCH/cluster"
run "lifecycle: restarts, mode switch, remote delete, stop deadline" tests/lifecycle.sh "$SCRATCH/lifecycle"
rm -rf "$SCRATCH/lifecycle"
# everything with 3 failovers in the plain pass; under the sanitizers (for
# time) 1 failover and no catch-up or wipe scenario; make check-cluster: 20
if [ -n "${SANITIZER:-}" ]; then
	run "replication (short): kill, freeze, 1 failover, stale, rollback" env FAILOVERS=1 REPL_SHORT=1 tests/replication.sh "$SCRATCH/repl"
else
	run "replication: kill, catch-up, freeze, wipe, 3 failovers, stale, rollback" env FAILOVERS=3 tests/replication.sh "$SCRATCH/repl"
fi
rm -rf "$SCRATCH/repl"
run "replication_big: 1 GiB trim and zeroes, 10 promotes past the epoch history" tests/replication_big.sh "$SCRATCH/repl-big"
rm -rf "$SCRATCH/repl-big"
run "resync_kill: a replica SIGKILLed mid-copy, 3 times" env ROUNDS=3 tests/resync_kill.sh "$SCRATCH/resync-kill"
rm -rf "$SCRATCH/resync-kill"
if [ "$(id -u)" = 0 ] && unshare -m true 2>/dev/null; then
	run "primary_fail: the primary's device fills, the role moves" tests/primary_fail.sh "$SCRATCH/primary-fail"
	rm -rf "$SCRATCH/primary-fail"
else
	skip "primary_fail: the primary's device fills, the role moves" "needs root and unshare -m (a tmpfs in a private mount namespace)"
fi

echo "== testudo-bench"
run "bench: load, witness, kill test" tests/bench.sh "$SCRATCH/bench"
rm -rf "$SCRATCH/bench"
# the accuracy check measures; the sanitizer build would only measure the sanitizers
if [ -z "${SANITIZER:-}" ] || [ "${ACCURACY:-0}" = 1 ]; then
	run "bench: IOPS and latency within 10% of fio" env QUICK=1 TMPDIR="$SCRATCH" bench/accuracy
fi

echo "== the kernel's NBD client (QEMU guest, tests/e2e-kernel)"
if ! command -v qemu-system-x86_64 >/dev/null || ! ls /boot/vmlinuz-* >/dev/null 2>&1; then
	skip "e2e-kernel" "needs qemu-system-x86 and linux-image-amd64 (make deps)"
else
	run "e2e-kernel short: ext4, fstrim, fio, -b 512, -g" tests/e2e-kernel/run.sh "$SCRATCH/e2e"
	# the harness must see a broken run; once is enough (not again under ASan)
	if [ -z "${SANITIZER:-}" ]; then
		run_must_fail "e2e-kernel: testudod SIGKILLed under fio" 'at step fio-raw, .* [1-9][0-9]* I/O errors' \
			tests/e2e-kernel/run.sh --fault kill "$SCRATCH/e2e-kill"
		run_must_fail "e2e-kernel: volume force-deleted under fio" 'at step fio-raw, .* [1-9][0-9]* I/O errors' \
			tests/e2e-kernel/run.sh --fault delete "$SCRATCH/e2e-delete"
	fi
	rm -rf "$SCRATCH"/e2e*
fi

T=$BUILD/tests/torture
echo "== engine, file backend"
run "crash ($CRASH_ITERATIONS x SIGKILL)" "$T" crash --dev "$SCRATCH/crash.img" --iterations "$CRASH_ITERATIONS"
run "powercut ($CRASH_ITERATIONS cuts)" "$T" powercut --dev "$SCRATCH/cut.img" --iterations "$CRASH_ITERATIONS"
run_expect_fail "powercut, sync disabled" env TDO_FAULT_SKIP_SYNC=1 "$T" powercut --dev "$SCRATCH/broken.img" --iterations 3
run "corruption" "$T" corrupt --dev "$SCRATCH/corrupt.img"
run "damage mid-log refused, torn tail cut" "$T" midcut --dev "$SCRATCH/midcut.img"
# the worker-thread path the engine falls back to without io_uring
run "crash, worker threads, pread (5 x SIGKILL)" env TDO_NO_URING=1 TDO_NO_MAPPED_READS=1 "$T" crash --dev "$SCRATCH/wcrash.img" --iterations 5
run "powercut, worker threads (5 cuts)" env TDO_NO_URING=1 "$T" powercut --dev "$SCRATCH/wcut.img" --iterations 5
run "corruption, worker threads, mapped reads" env TDO_NO_URING=1 "$T" corrupt --dev "$SCRATCH/wcorrupt.img"
run "cleaner (80%, ${CLEAN_OVERWRITE}x overwrite)" "$T" cleaner --dev "$SCRATCH/clean.img" --util 80 --overwrite "$CLEAN_OVERWRITE"
rm -f "$SCRATCH"/*.img

echo "== engine, pmem backend (PMEM_IS_PMEM_FORCE=1)"
export PMEM_IS_PMEM_FORCE=1
run "pmem crash (10 x SIGKILL)" "$T" crash --backend pmem --dev "$SCRATCH/pcrash.img" --iterations 10
run "pmem powercut (10 cuts)" "$T" powercut --backend pmem --dev "$SCRATCH/pcut.img" --iterations 10
run "pmem corruption" "$T" corrupt --backend pmem --dev "$SCRATCH/pcorrupt.img"
run "pmem damage mid-log refused, torn tail cut" "$T" midcut --backend pmem --dev "$SCRATCH/pmidcut.img"
run "pmem cleaner (80%, 2x overwrite)" "$T" cleaner --backend pmem --dev "$SCRATCH/pclean.img" --util 80 --overwrite 2
unset PMEM_IS_PMEM_FORCE
rm -f "$SCRATCH"/*.img

echo "== engine, loop block device"
if [ "$(id -u)" = 0 ] && command -v losetup >/dev/null && [ -e /dev/loop-control ]; then
	truncate -s 160M "$SCRATCH/loop.img"
	if LOOPDEV=$(losetup --find --show "$SCRATCH/loop.img" 2>"$LOG"); then
		run "loop crash (5 x SIGKILL)" "$T" crash --dev "$LOOPDEV" --iterations 5
		run "loop powercut (5 cuts)" "$T" powercut --dev "$LOOPDEV" --iterations 5
		run "loop corruption" "$T" corrupt --dev "$LOOPDEV"
		losetup -d "$LOOPDEV"
	else
		skip "loop device" "losetup failed: $(cat "$LOG")"
	fi
else
	skip "loop device" "needs root, losetup and /dev/loop-control"
fi

echo
if [ "$failed" -gt 0 ]; then
	echo "failed: ${failed_names[*]}"
fi
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
