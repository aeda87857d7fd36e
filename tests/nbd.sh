#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# testudod against real NBD clients: nbdinfo, nbdcopy, qemu-img, qemu-io,
# fio's nbd engine, libnbd (protocol corners, multi-conn, bad input), and
# restarts after SIGTERM and SIGKILL. usage: tests/nbd.sh SCRATCHDIR
set -u
cd "$(dirname "$0")/.."
. tests/lib.sh
D=${1:?usage: nbd.sh SCRATCHDIR}
mkdir -p "$D"
rm -f "$D"/j1 "$D"/*.img
n=0 bad=0

DEV_SIZE=3G
"$BUILD"/testudo format "$D/dev.img" --size "$DEV_SIZE" --sparse >/dev/null
make_volume "$D" big 1100M
make_volume "$D" proto 256M
make_volume "$D" mc 64M
make_volume "$D" qemu 128M
make_volume "$D" fio 256M
make_volume "$D" restart 64M
start_node "$D" || { echo "FAILED: testudod did not start"; cat "$D/log"; exit 1; }
U=nbd://127.0.0.1:$NBD_PORT

step "nbdinfo --list" bash -c "nbdinfo --list '$U' | grep -q 'export=\"proto\"'"
step "nbdinfo --json" bash -c "nbdinfo --json '$U/proto' | $PY -c 'import json,sys; j=json.load(sys.stdin); e=j[\"exports\"][0]; assert e[\"export-size\"]==256<<20 and e[\"can_multi_conn\"] and e[\"block_size_minimum\"]==512, e'"

head -c 1G /dev/urandom >"$D/in.raw"
step "nbdcopy 1 GiB in" nbdcopy "$D/in.raw" "$U/big"
step "nbdcopy 1 GiB out" nbdcopy "$U/big" "$D/out.raw"
step "nbdcopy checksums equal" bash -c "[ \"\$(head -c 1G '$D/out.raw' | sha256sum)\" = \"\$(sha256sum <'$D/in.raw')\" ]"
rm -f "$D/out.raw"

head -c 100M "$D/in.raw" >"$D/q.raw"
step "qemu-img convert into the volume" qemu-img convert -n -f raw -O raw "$D/q.raw" "$U/qemu"
step "qemu-img compare" bash -c "qemu-img compare -f raw -F raw '$D/q.raw' '$U/qemu' | grep -q 'Images are identical'"
rm -f "$D/q.raw" "$D/in.raw"
step "qemu-io patterns" bash -c "out=\$(qemu-io -f raw \
	-c 'write -P 0xab 0 1M' -c 'read -P 0xab 0 1M' \
	-c 'write -P 0x5c 1536 2560' -c 'read -P 0x5c 1536 2560' -c 'read -P 0xab 0 1536' \
	-c 'write -z 1M 1M' -c 'read -P 0 1M 1M' \
	-c 'discard 2M 1M' -c 'read -P 0 2M 1M' -c 'flush' '$U/qemu' 2>&1); echo \"\$out\"; ! grep -qi 'fail\|mismatch\|error' <<<\"\$out\""

step "fio nbd engine with --verify=crc32c" fio --name=verify --ioengine=nbd --uri="$U/fio" \
	--rw=randwrite --bs=4k --iodepth=16 --size=64M --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 \
	--time_based=0 --output="$D/fio.out"
step "fio sequential 128k with verify" fio --name=seq --ioengine=nbd --uri="$U/fio" \
	--rw=write --bs=128k --iodepth=8 --size=128M --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 \
	--output="$D/fio2.out"

step "nbd protocol: every option, command, flag and error reply" "$PY" tests/nbd_protocol.py "$NBD_PORT" proto
step "multi-conn: 4 connections, flush on one, reads on another" "$PY" tests/nbd_clients.py multiconn "$NBD_PORT" mc
step "bad input: garbage, truncated handshakes, absurd lengths, 1000 connections" \
	"$PY" tests/nbd_clients.py badinput "$NBD_PORT" mc
step "data intact after the abuse" "$PY" tests/nbd_protocol.py "$NBD_PORT" proto

# restart: write, SIGTERM, start again, read back
step "write before SIGTERM" "$PY" tests/nbd_clients.py write "$NBD_PORT" restart "$D/j1" 2
step "SIGTERM: clean exit, status 0" stop_node
step "start again" start_node "$D"
step "every write reads back after SIGTERM" "$PY" tests/nbd_clients.py verify "$NBD_PORT" restart "$D/j1"

# write, SIGKILL mid-run, start again: every acknowledged write reads back
lines0=$(wc -l <"$D/j1")
"$PY" tests/nbd_clients.py write "$NBD_PORT" restart "$D/j1" 10 >"$D/w.out" 2>&1 &
writer=$!
wait_for "writes under way" 10 bash -c "[ \$(wc -l <'$D/j1') -gt $((lines0 + 200)) ]"
sleep 0.$((RANDOM % 9 + 1))
kill_node
wait "$writer"
n=$((n + 1))
grep -q "acknowledged writes" "$D/w.out" || { echo "FAILED: writer"; cat "$D/w.out"; bad=$((bad + 1)); }
step "start after SIGKILL" start_node "$D"
step "every acknowledged write reads back after SIGKILL ($(grep -c ^A "$D/j1") acknowledged)" \
	"$PY" tests/nbd_clients.py verify "$NBD_PORT" restart "$D/j1"

# a clean disconnect is logged
step "the daemon logs clean disconnects" grep -q "clean disconnect (NBD_CMD_DISC)" "$D/log"
step "SIGTERM at the end: clean exit" stop_node

# a missing, unformatted or damaged device: one line, non-zero exit
step "missing device" bash -c "! '$BUILD'/testudod --device '$D/nope.img' 2>'$D/e1' && [ \$(wc -l <'$D/e1') = 1 ] && grep -q 'no such file' '$D/e1'"
head -c 64M /dev/zero >"$D/zero.img"
step "unformatted device" bash -c "! '$BUILD'/testudod --device '$D/zero.img' 2>'$D/e2' && [ \$(wc -l <'$D/e2') = 1 ] && grep -q 'not a Testudo device' '$D/e2'"
step "bad listen address" bash -c "! '$BUILD'/testudod --device '$D/dev.img' --nbd nonsense 2>'$D/e3' && grep -q 'cannot listen' '$D/e3'"
printf 'device = %s\nnbd = 127.0.0.1:0\nadmin = 127.0.0.1:0\nbogus = 1\n' "$D/dev.img" >"$D/bad.ini"
step "config with an unknown key" bash -c "! '$BUILD'/testudod --config '$D/bad.ini' 2>'$D/e4' && grep -q 'unknown key' '$D/e4'"
rm -f "$D"/*.img

echo "nbd: $((n - bad)) of $n checks passed"
[ "$bad" -eq 0 ]
