/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The volume tier: replicated volumes on top of a node's engine and its
 * peer connections (testudo/cluster.h). The wire format is in
 * testudo/repl.h; the node's state file in testudo/repl.h too.
 *
 * A node in a cluster runs one tdo_vtier. It keeps every volume's
 * configuration (replica set, primary, epoch, replica states), serves
 * client I/O on any volume (as primary, or by forwarding to the primary),
 * replicates writes, resyncs replicas that fell behind and answers
 * verify and promote requests. Everything runs on the daemon's loop;
 * asynchronous calls follow the engine's rules (an error return means the
 * callback will not run; otherwise it runs exactly once, never inside the
 * call).
 */
#ifndef TESTUDO_VTIER_H
#define TESTUDO_VTIER_H

#include <jansson.h>
#include <stdint.h>
#include <uv.h>

#include "testudo/cluster.h"
#include "testudo/engine.h"
#include "testudo/repl.h"

struct tdo_vtier;

struct tdo_vtier_opts {
	const char *state_path;      /* the node's state file (volume configurations) */
	unsigned ack_timeout_ms;     /* a replica silent this long on a write is out of date (default 1000) */
	uint64_t resync_rate;        /* bytes per second a resync may copy (default 256 MiB/s) */
	/* called when a volume is deleted, so the front end can hang up its clients */
	void (*vol_gone)(void *arg, const char *name);
	void *arg;
};

/*
 * Load the state file (a missing one is an empty state), adopt the
 * engine's volumes that no configuration names as single-replica volumes
 * of this node, and hook into the cluster. -EINVAL with a reason in ERR
 * for a damaged state file.
 */
int tdo_vtier_start(uv_loop_t *loop, struct tdo_engine *e, struct tdo_cluster *c,
                    const struct tdo_vtier_opts *o, struct tdo_vtier **out, char *err, size_t errlen);
/* Fail what waits on other nodes and send nothing more; call once the
 * front end has drained, before the cluster and the engine close. */
void tdo_vtier_stop(struct tdo_vtier *vt);
/* Free it, once the engine has closed (its last callbacks have run). */
void tdo_vtier_free(struct tdo_vtier *vt);

/* A client's view of volume NAME: 0 with its size, or TDO_ENOVOL. */
int tdo_vtier_lookup(struct tdo_vtier *vt, const char *name, uint64_t *size);
/* Names of the live volumes, sorted, up to MAX; returns how many exist. */
int tdo_vtier_names(struct tdo_vtier *vt, char (*names)[TDO_NAME_MAX + 1], int max);
/* The local engine volume id of NAME when this node is its primary (its
 * allocation map is the volume's), else -1: a replica's may lag. */
int64_t tdo_vtier_primary_id(struct tdo_vtier *vt, const char *name);

/* Client I/O: OP is a TDO_RMOP_* (READ, WRITE, ZERO, TRIM, FLUSH). */
int tdo_vtier_io(struct tdo_vtier *vt, const char *name, int op, unsigned flags, uint64_t off,
                 uint64_t len, void *buf, tdo_done_cb cb, void *arg);

/* Administrative operations; CB gets 0 or a negative error and a message. */
typedef void (*tdo_vt_cb)(void *arg, int status, const char *msg, json_t *result);
int tdo_vtier_create(struct tdo_vtier *vt, const char *name, uint64_t size, uint32_t flags, int replicas,
                     const char *primary, tdo_vt_cb cb, void *arg, char *err, size_t errlen);
int tdo_vtier_delete(struct tdo_vtier *vt, const char *name, tdo_vt_cb cb, void *arg, char *err, size_t errlen);
int tdo_vtier_resize(struct tdo_vtier *vt, const char *name, uint64_t size, tdo_vt_cb cb, void *arg,
                     char *err, size_t errlen);
int tdo_vtier_promote(struct tdo_vtier *vt, const char *name, const char *node, tdo_vt_cb cb, void *arg,
                      char *err, size_t errlen);
/* Compare the replicas' contents region by region; RESULT says where they differ. */
int tdo_vtier_verify(struct tdo_vtier *vt, const char *name, tdo_vt_cb cb, void *arg, char *err,
                     size_t errlen);

/* Every volume's configuration, replica states and resync progress. */
json_t *tdo_vtier_status(struct tdo_vtier *vt);
/* One volume's, or NULL. */
json_t *tdo_vtier_volume_json(struct tdo_vtier *vt, const char *name);

#endif
