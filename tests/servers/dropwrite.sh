#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# A deliberately broken disk for nbdkit's sh plugin: it acknowledges every
# write but silently drops every DROP_EVERY-th one (default 5). The bench's
# witness must catch it. usage: DROP_IMG=FILE nbdkit sh tests/servers/dropwrite.sh
IMG=${DROP_IMG:?DROP_IMG names the backing file}
EVERY=${DROP_EVERY:-5}
case "$1" in
get_size) stat -c %s "$IMG" ;;
can_write | can_flush | can_multi_conn) exit 0 ;;
pread) dd if="$IMG" iflag=skip_bytes,count_bytes skip="$4" count="$3" status=none ;;
pwrite)
	# nbdkit's sh plugin serialises requests by default, so the counter is safe
	n=$(($(cat "$IMG.count" 2>/dev/null || echo 0) + 1))
	echo "$n" >"$IMG.count"
	if [ $((n % EVERY)) -eq 0 ]; then
		cat >/dev/null
	else
		dd of="$IMG" oflag=seek_bytes conv=notrunc seek="$4" status=none
	fi
	;;
flush) sync "$IMG" ;;
*) exit 2 ;;   # not implemented: nbdkit uses its defaults
esac
