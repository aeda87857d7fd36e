/* SPDX-License-Identifier: Apache-2.0 */
/*
 * testudod internals, grouped by the file that defines them. Everything
 * runs on the daemon's one libuv loop.
 */
#ifndef TESTUDO_SERVER_INTERNAL_H
#define TESTUDO_SERVER_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "testudo/cluster.h"
#include "testudo/engine.h"
#include "testudo/list.h"
#include "testudo/net.h"
#include "testudo/nbd.h"
#include "testudo/util.h"
#include "testudo/vtier.h"

/* ---- metrics.c ---------------------------------------------------------- */

/* Latency histogram: bucket i counts latencies < 2^i microseconds. */
#define MET_BUCKETS 24
struct met_hist {
	uint64_t count, sum_usec;
	uint64_t bucket[MET_BUCKETS];
};
enum met_op { MET_READ, MET_WRITE, MET_FLUSH, MET_TRIM, MET_ZERO, MET_CACHE, MET_BLOCK_STATUS, MET_NOPS };
/*
 * One volume's figures. Invariants: a slot with name[0] == 0 is free; a
 * forgotten slot (its volume was deleted) is found by no lookup and is
 * freed when its last holder lets go (refs == 0); holders are the NBD
 * connections attached to the volume, each holding one reference from
 * met_vol_get() to met_vol_put().
 */
struct met_vol {
	char name[TDO_NAME_MAX + 1];
	uint32_t refs;
	bool forgotten;
	uint64_t ops[MET_NOPS];
	uint64_t errors[MET_NOPS];
	uint64_t bytes_read, bytes_written;
	struct met_hist lat[MET_NOPS];
};
struct metrics {
	struct met_vol *vols;       /* keyed by name; allocated once and never moved,
	                             * since connections keep pointers into it */
	uint32_t nvols;
	uint64_t conns_total, conns_open, handshakes_failed, protocol_errors;
};
/* Volume NAME's slot, made when new; NULL when the table is full. */
struct met_vol *met_vol(struct metrics *m, const char *name);
/* The same, with a reference the caller holds until met_vol_put(). */
struct met_vol *met_vol_get(struct metrics *m, const char *name);
/* Let go of what met_vol_get() gave (NULL: nothing). */
void met_vol_put(struct metrics *m, struct met_vol *v);
void met_record(struct met_vol *v, int op, uint64_t usec, uint64_t bytes, int err);
const char *met_op_name(int op);

/* ---- main.c ------------------------------------------------------------- */

struct daemon {
	uv_loop_t *loop;
	struct tdo_engine *engine;
	const char *device;
	uv_tcp_t nbd_listener, admin_listener;
	char nbd_addr[80], admin_addr[80], repl_addr[80];
	struct tdo_cluster *cluster;  /* NULL: a node outside any cluster */
	struct tdo_vtier *vtier;    /* every volume: the one route to data (a lone node is a cluster of one) */
	struct tdo_list conns;      /* struct nbd_conn: every open NBD connection */
	struct metrics met;
	bool stopping;
	uint64_t started_usec;
};

/* Called once the last NBD connection has closed during a stop. */
void daemon_conns_drained(struct daemon *d);

/* ---- nbd_conn.c: listener and connection lifetime ------------------------- */

int nbd_listen(struct daemon *d, const char *host, int port);
/* Serve NBD on an already connected stream socket FD (tests, fuzzing). */
int nbd_conn_adopt(struct daemon *d, int fd);
/* Stop accepting, let in-flight requests finish, close every connection. */
void nbd_shutdown(struct daemon *d);
/* The stop's deadline passed: close every connection now, without
 * waiting for queued replies to be read; requests still in flight end
 * first (the caller fails those waiting on other nodes). */
void nbd_abort(struct daemon *d);
/* Number of open connections attached to volume NAME (any, when NULL). */
int nbd_conn_count(struct daemon *d, const char *name);
/* Close every NBD connection attached to volume NAME (an operator's forced
 * delete): requests in flight still complete, nothing more is read. */
void nbd_conn_close_volume(struct daemon *d, const char *name, const char *why);

/* ---- http.c: the admin endpoint (HTTP/JSON, /metrics; admin.h) ----------- */

/* Serve the admin API on HOST:PORT; its address goes to d->admin_addr. */
int http_listen(struct daemon *d, const char *host, int port);
/* Stop accepting and close every admin connection, but let one waiting on
 * the engine get its reply first. */
void http_shutdown(struct daemon *d);

#endif
