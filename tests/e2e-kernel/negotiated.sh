#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# What NBD clients negotiated and sent, from a testudod -v log: client
# flags, options, transmission flags, and per command the count, the
# lengths, the command flags and how many were not 4 KiB aligned.
# usage: negotiated.sh LOG
set -eu
LOG=${1:?usage: negotiated.sh LOG}
awk '
function opt(n) {
	return n == 1 ? "EXPORT_NAME" : n == 2 ? "ABORT" : n == 3 ? "LIST" : n == 5 ? "STARTTLS" : \
	       n == 6 ? "INFO" : n == 7 ? "GO" : n == 8 ? "STRUCTURED_REPLY" : n == 9 ? "LIST_META_CONTEXT" : \
	       n == 10 ? "SET_META_CONTEXT" : n == 11 ? "EXTENDED_HEADERS" : "option " n
}
function cmd(n) {
	return n == 0 ? "READ" : n == 1 ? "WRITE" : n == 3 ? "FLUSH" : n == 4 ? "TRIM" : n == 5 ? "CACHE" : \
	       n == 6 ? "WRITE_ZEROES" : n == 7 ? "BLOCK_STATUS" : "cmd " n
}
function tflags(f,   s, i, names) {
	split("HAS_FLAGS READ_ONLY SEND_FLUSH SEND_FUA ROTATIONAL SEND_TRIM SEND_WRITE_ZEROES SEND_DF CAN_MULTI_CONN SEND_RESIZE SEND_CACHE SEND_FAST_ZERO", names, " ")
	s = ""
	for (i = 0; i < 12; i++)
		if (int(f / 2 ^ i) % 2)
			s = s (s ? "|" : "") names[i + 1]
	return s
}
function hex(s,   v, i) {   # "0x1f" to a number (mawk has no strtonum)
	v = 0
	for (i = 3; i <= length(s); i++)
		v = v * 16 + index("0123456789abcdef", tolower(substr(s, i, 1))) - 1
	return v
}
/: client flags 0x/ { cf[$NF]++ }
/: option [0-9]+, [0-9]+ bytes$/ { o = $0; sub(/.*: option /, "", o); sub(/,.*/, "", o); opts[opt(o)]++ }
/information requests$/ { n = $(NF - 2); go[n]++ }
/: transmission flags 0x/ { tf[$NF]++ }
/: volume [^ ]*, [0-9]* bytes, / {
	v = $0; sub(/.*: volume /, "", v); sub(/,.*/, "", v); vol[v]++
	r = $0; sub(/.* bytes, /, "", r); replies[r]++
}
/: cmd [0-9]+ flags 0x[0-9a-f]+ offset [0-9]+ length [0-9]+$/ {
	c = cmd($(NF - 6)); f = hex($(NF - 4)); off = $(NF - 2); len = $NF
	id = $0; sub(/.*connection /, "", id); sub(/:.*/, "", id); perconn[id]++
	cnt[c]++
	if (!(c in min) || len < min[c]) min[c] = len
	if (len > max[c]) max[c] = len
	if (off % 4096 || len % 4096) unal[c]++
	if (f % 2) fua[c]++
	if (f >= 2) other[c]++
	key = c SUBSEP len
	if (!(key in lens)) order[c] = order[c] " " len
	lens[key]++
}
/clean disconnect \(NBD_CMD_DISC\)/ { disc++ }
END {
	for (k in cf) printf "client flags: %s (%d connections)\n", k, cf[k]
	s = ""; for (k in opts) s = s sprintf(" %s x%d", k, opts[k]); print "options:" s
	s = ""; for (k in go) s = s sprintf(" %d requests x%d", k, go[k]); print "GO/INFO information requests:" s
	for (k in tf) printf "transmission flags sent: %s = %s\n", k, tflags(hex(k))
	s = ""; for (k in replies) s = s sprintf(" %s x%d", k, replies[k]); print "replies:" s
	s = ""; for (k in vol) s = s sprintf(" %s x%d", k, vol[k]); print "connections per volume:" s
	for (c in cnt) {
		m = split(order[c], L, " ")
		# the five most common lengths
		s = ""
		for (t = 0; t < 5; t++) {
			best = ""; bc = 0
			for (i = 1; i <= m; i++)
				if (lens[c, L[i]] > bc && !((c, L[i]) in shown)) { best = L[i]; bc = lens[c, L[i]] }
			if (best == "") break
			shown[c, best] = 1
			s = s sprintf(" %s x%d", best, bc)
		}
		printf "%-12s %7d requests, length %d..%d, %d distinct lengths, most common:%s; FUA %d, other flags %d, not 4 KiB aligned %d\n", \
			c, cnt[c], min[c], max[c], m, s, fua[c] + 0, other[c] + 0, unal[c] + 0
	}
	s = ""; for (k in perconn) s = s sprintf(" #%s:%d", k, perconn[k]); print "requests per connection:" s
	printf "clean disconnects: %d\n", disc
}' "$LOG"
