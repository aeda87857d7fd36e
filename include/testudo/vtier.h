/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The volume tier: replicated volumes on top of a node's engine and its
 * peer connections (testudo/cluster.h). The wire format is in
 * testudo/repl.h; the node's state file in testudo/repl.h too.
 *
 * Every node runs one tdo_vtier, and the access tier (server/) reaches
 * volumes only through it. A node outside any cluster is a cluster of
 * one: no peers, no state file, every volume of its engine a
 * single-replica volume of its own; the calls below behave the same.
 *
 * It keeps every volume's configuration (replica set, primary, epoch,
 * replica states), serves client I/O on any volume (as primary, or by
 * forwarding to the primary), replicates writes, resyncs replicas that
 * fell behind and answers verify and promote requests. Everything runs
 * on the daemon's loop; asynchronous calls follow the engine's rules (an
 * error return means the callback will not run; otherwise it runs exactly
 * once, never inside the call).
 *
 * This header carries no JSON: list, info and verify return structs, and
 * the access tier renders them.
 */
#ifndef TESTUDO_VTIER_H
#define TESTUDO_VTIER_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "testudo/cluster.h"
#include "testudo/engine.h"
#include "testudo/repl.h"

struct tdo_vtier;

struct tdo_vtier_opts {
	/* this node's id when there is no cluster (default "local") */
	const char *node_id;
	/* the node's state file (volume configurations); NULL with no cluster */
	const char *state_path;
	unsigned ack_timeout_ms;     /* a replica silent this long on a write is out of date (default 1000) */
	uint64_t resync_rate;        /* bytes per second a resync may copy (default 256 MiB/s) */
	/* called when a volume is deleted, so the front end can hang up its clients */
	void (*vol_gone)(void *arg, const char *name);
	void *arg;
};

/*
 * Load the state file (a missing one is an empty state), adopt the
 * engine's volumes that no configuration names as single-replica volumes
 * of this node, and hook into the cluster C (NULL: a node outside any
 * cluster). -EINVAL with a reason in ERR for a damaged state file.
 */
int tdo_vtier_start(uv_loop_t *loop, struct tdo_engine *e, struct tdo_cluster *c,
                    const struct tdo_vtier_opts *o, struct tdo_vtier **out, char *err, size_t errlen);
/* Fail what waits on other nodes and send nothing more; call once the
 * front end has drained, before the cluster and the engine close. */
void tdo_vtier_stop(struct tdo_vtier *vt);
/* Free it, once the engine has closed (its last callbacks have run) and
 * every handle is closed. */
void tdo_vtier_free(struct tdo_vtier *vt);
/* This node's id. */
const char *tdo_vtier_node_id(struct tdo_vtier *vt);

/* ---- the data path: a handle per attached client ---------------------- */

/*
 * An open volume. A handle names one incarnation of the volume: once the
 * volume is deleted (even if a volume of the same name is created
 * again), every call on the handle fails with TDO_ENOVOL.
 */
struct tdo_vhandle;

/* Open volume NAME: 0 with its size in *SIZE, or TDO_ENOVOL. */
int tdo_vhandle_open(struct tdo_vtier *vt, const char *name, struct tdo_vhandle **out, uint64_t *size);
/* Close H; requests still in flight complete as usual. */
void tdo_vhandle_close(struct tdo_vhandle *h);
/* The volume's name. */
const char *tdo_vhandle_name(const struct tdo_vhandle *h);

/*
 * Client I/O: OP is a TDO_RMOP_* (READ, WRITE, ZERO, TRIM, FLUSH); FLAGS
 * TDO_ZERO_NO_HOLE for ZERO. A write's CB with status 0 means durable on
 * every in-sync copy. -EINVAL for an op or range the volume cannot take,
 * TDO_ENOVOL once the volume is gone, -ESHUTDOWN when the node stops.
 */
int tdo_vhandle_io(struct tdo_vhandle *h, int op, unsigned flags, uint64_t off, uint64_t len, void *buf,
                   tdo_done_cb cb, void *arg);

/*
 * Allocation map of [OFF, OFF+LEN) as tdo_engine_map gives it: 0, a
 * negative error, or what FN returned when it stopped the walk. Only the
 * primary's map is the volume's (a replica's may lag), so elsewhere the
 * whole range is reported allocated, which is always safe. Synchronous.
 */
int tdo_vhandle_map(struct tdo_vhandle *h, uint64_t off, uint64_t len, tdo_map_fn fn, void *arg);

/* ---- what a volume is -------------------------------------------------- */

enum tdo_vrole { TDO_VROLE_NONE, TDO_VROLE_PRIMARY, TDO_VROLE_REPLICA };
enum tdo_rs_phase_name { TDO_RSP_STARTING, TDO_RSP_COPYING, TDO_RSP_FINAL, TDO_RSP_FINISHING };

struct tdo_vrep_info {
	char node[TDO_NODE_ID_MAX + 1];
	uint32_t state;              /* enum tdo_rep_state */
	bool primary;
	bool down;                   /* not this node and its connection is down */
	bool resync;                 /* this node (the primary) resyncs it: the figures below */
	int resync_phase;            /* enum tdo_rs_phase_name */
	uint64_t copied_blocks, total_blocks, dirty_blocks;
};

struct tdo_vinfo {
	char name[TDO_NAME_MAX + 1];
	uint64_t size;
	uint32_t flags;              /* enum tdo_vol_flags */
	uint32_t epoch;
	uint64_t version;
	uint64_t ctime;
	char primary[TDO_NODE_ID_MAX + 1];
	int role;                    /* enum tdo_vrole: this node's */
	uint32_t nrep;
	struct tdo_vrep_info rep[TDO_REP_MAX];
	bool local;                  /* this node holds a copy: the fields below are its */
	uint64_t lsn;                /* the primary: the last LSN given out; a replica: its newest */
	uint64_t used_bytes;         /* live payload bytes of this node's copy */
	bool resync_into;            /* a resync into this node's copy began and has not ended */
};

/* Volume NAME: 0, or TDO_ENOVOL. */
int tdo_vtier_info(struct tdo_vtier *vt, const char *name, struct tdo_vinfo *out);
/* Up to MAX volumes sorted by name; returns how many exist. */
int tdo_vtier_list(struct tdo_vtier *vt, struct tdo_vinfo *out, int max);

/* ---- administration ----------------------------------------------------- */

/*
 * An operator's change. CB gets 0 or a negative error, and a message for
 * the operator (NULL when there is nothing to add). A create, resize or
 * delete is answered once it is in force and this node's copy (when it
 * holds one) has followed it on its device.
 */
typedef void (*tdo_vt_cb)(void *arg, int status, const char *msg);
int tdo_vtier_create(struct tdo_vtier *vt, const char *name, uint64_t size, uint32_t flags, int replicas,
                     const char *primary, tdo_vt_cb cb, void *arg, char *err, size_t errlen);
int tdo_vtier_delete(struct tdo_vtier *vt, const char *name, tdo_vt_cb cb, void *arg, char *err, size_t errlen);
int tdo_vtier_resize(struct tdo_vtier *vt, const char *name, uint64_t size, tdo_vt_cb cb, void *arg,
                     char *err, size_t errlen);
/* Make NODE the primary; CB gets the new epoch on success. */
typedef void (*tdo_vt_promote_cb)(void *arg, int status, const char *msg, uint32_t epoch);
int tdo_vtier_promote(struct tdo_vtier *vt, const char *name, const char *node, tdo_vt_promote_cb cb, void *arg,
                      char *err, size_t errlen);

/* What verify found: per replica whether it was checked, and the regions
 * whose checksums differ (the first TDO_VERIFY_MAX_DIFFS of them). */
#define TDO_VERIFY_MAX_DIFFS 100
struct tdo_verify_diff {
	uint64_t offset, length;
	uint64_t sum[TDO_REP_MAX];   /* per replica; valid where status[i] == 0 */
};
struct tdo_verify_result {
	char name[TDO_NAME_MAX + 1];
	uint64_t region_bytes, regions;
	int nrep;
	char node[TDO_REP_MAX][TDO_NODE_ID_MAX + 1];
	int status[TDO_REP_MAX];     /* 0: checked, else why not */
	uint64_t differing;          /* regions that differ */
	int ndiffs;                  /* entries in diffs */
	struct tdo_verify_diff diffs[TDO_VERIFY_MAX_DIFFS];
	bool identical;              /* every replica checked, at least two, no difference */
};
/* Compare the replicas' contents region by region. CB gets RES (valid
 * during the call) whenever the comparison ran, even when some replicas
 * could not be checked (then STATUS is -EIO). */
typedef void (*tdo_vt_verify_cb)(void *arg, int status, const char *msg, const struct tdo_verify_result *res);
int tdo_vtier_verify(struct tdo_vtier *vt, const char *name, tdo_vt_verify_cb cb, void *arg, char *err,
                     size_t errlen);

#endif
