# SPDX-License-Identifier: Apache-2.0
# Shared helpers for the daemon's integration tests (source it).
#   start_node DIR [testudod args...]   format DIR/dev.img (unless it exists), start
#                                       testudod on port 0; sets NODE_PID, NBD_PORT,
#                                       ADMIN_PORT, NODE_DIR
#   stop_node                           SIGTERM, assert a clean exit (status 0)
#   kill_node                           SIGKILL
#   wait_for DESCRIPTION SECONDS CMD... poll CMD until it succeeds or time runs out
BUILD=${BUILD:-build}
PY=/usr/bin/python3     # Debian's python, which has libnbd's module

wait_for() {
	local what=$1 secs=$2; shift 2
	local deadline=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		if [ $SECONDS -ge $deadline ]; then
			echo "timed out after ${secs}s waiting for: $what" >&2
			return 1
		fi
		sleep 0.05
	done
}

start_node() {
	NODE_DIR=$1; shift
	mkdir -p "$NODE_DIR"
	[ -e "$NODE_DIR/dev.img" ] || "$BUILD"/testudo format "$NODE_DIR/dev.img" --size "${DEV_SIZE:-2G}" >/dev/null || return 1
	: >"$NODE_DIR/out"
	"$BUILD"/testudod --device "$NODE_DIR/dev.img" --nbd 127.0.0.1:0 --admin 127.0.0.1:0 "$@" \
		>"$NODE_DIR/out" 2>>"$NODE_DIR/log" &
	NODE_PID=$!
	wait_for "testudod to listen" 20 grep -q "listening admin" "$NODE_DIR/out" || return 1
	NBD_PORT=$(sed -n 's/^listening nbd .*:\([0-9]*\)$/\1/p' "$NODE_DIR/out")
	ADMIN_PORT=$(sed -n 's/^listening admin .*:\([0-9]*\)$/\1/p' "$NODE_DIR/out")
	[ -n "$NBD_PORT" ] && [ -n "$ADMIN_PORT" ]
}

stop_node() {
	local st=0
	kill -TERM "$NODE_PID" 2>/dev/null
	wait "$NODE_PID" || st=$?
	if [ "$st" -ne 0 ]; then
		echo "testudod exited with status $st after SIGTERM" >&2
		tail -20 "$NODE_DIR/log" >&2
		return 1
	fi
}

kill_node() {
	kill -KILL "$NODE_PID" 2>/dev/null
	wait "$NODE_PID" 2>/dev/null
	return 0
}

# volume creation without the daemon's admin API: the offline CLI, before start
make_volume() {   # make_volume DIR NAME SIZE [--compress lz4]
	local dir=$1; shift
	"$BUILD"/testudo --device "$dir/dev.img" volume create "$@" >/dev/null
}
