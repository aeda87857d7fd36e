/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: what GET /v1/status and GET /metrics say: the daemon's state as
 * JSON, and the engine's, the NBD front end's and the admin endpoint's
 * figures as Prometheus text (format 0.0.4).
 *
 * What: render_status() and render_metrics() take a snapshot of the
 * engine's statistics, the volume list, the counters metrics.c keeps and
 * the cluster's view of its peers, and return it rendered; admin.c sends
 * it. Every volume is listed, with zeroes until its first request.
 *
 * Why this way: rendering apart from routing and from the counters, so
 * that what /metrics says can be read in one place and the request path
 * (metrics.c) stays free of text.
 *
 * Must never: block the loop or keep anything between calls, or send a
 * partial /metrics: a failed allocation fails the whole text (NULL).
 */
#include <inttypes.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "internal.h"
#include "testudo/vtier.h"
#include "admin.h"

/* A growable string; oom is sticky and the text is then unusable. */
struct sbuf {
	char *p;
	size_t len, cap;
	bool oom;
};

/* ---- small helpers ------------------------------------------------------- */

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->oom)
		return;
	for (;;) {
		size_t room = b->cap - b->len;
		va_start(ap, fmt);
		n = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->oom = true;
			return;
		}
		if ((size_t)n < room) {
			b->len += (size_t)n;
			return;
		}
		size_t ncap = b->cap ? b->cap * 2 : 4096;
		while (ncap - b->len <= (size_t)n)
			ncap *= 2;
		char *np = realloc(b->p, ncap);
		if (!np) {
			b->oom = true;
			return;
		}
		b->p = np;
		b->cap = ncap;
	}
}

/* Microseconds as decimal seconds, exactly. */
static void sb_seconds(struct sbuf *b, uint64_t usec)
{
	sb_printf(b, "%" PRIu64 ".%06" PRIu64, usec / 1000000, usec % 1000000);
}

/* ---- status and metrics ---------------------------------------------------- */

/* (user + cleaner) / user payload bytes; 1 before anything was written. */
static double write_amp(const struct tdo_engine_stats *st)
{
	if (st->user_bytes == 0)
		return 1.0;
	return (double)(st->user_bytes + st->clean_bytes) / (double)st->user_bytes;
}

/* ---- volumes ------------------------------------------------------------- */

static const char *const role_names[] = {
	[TDO_VROLE_NONE] = "none", [TDO_VROLE_PRIMARY] = "primary", [TDO_VROLE_REPLICA] = "replica",
};
static const char *const rep_state_names[] = {
	[TDO_REP_IN_SYNC] = "in-sync", [TDO_REP_CATCHING_UP] = "catching-up", [TDO_REP_OUT_OF_DATE] = "out-of-date",
};
static const char *const rs_phase_names[] = {
	[TDO_RSP_STARTING] = "starting", [TDO_RSP_COPYING] = "copying", [TDO_RSP_FINAL] = "final",
	[TDO_RSP_FINISHING] = "finishing",
};
#define NAME_OF(table, i) ((unsigned)(i) < sizeof(table) / sizeof(table[0]) && (table)[i] ? (table)[i] : "unknown")

json_t *render_volume(struct daemon *d, const struct tdo_vinfo *vi)
{
	json_t *reps = json_array(), *j;

	for (uint32_t i = 0; i < vi->nrep; i++) {
		const struct tdo_vrep_info *r = &vi->rep[i];
		json_t *o = json_pack("{s:s, s:s, s:b, s:b}", "node", r->node, "state", NAME_OF(rep_state_names, r->state),
		                      "primary", r->primary, "down", r->down);
		if (o && r->resync)
			json_object_set_new(o, "resync", json_pack("{s:I, s:I, s:I, s:s}",
			                    "copied_blocks", (json_int_t)r->copied_blocks,
			                    "total_blocks", (json_int_t)r->total_blocks,
			                    "dirty_blocks", (json_int_t)r->dirty_blocks,
			                    "phase", NAME_OF(rs_phase_names, r->resync_phase)));
		json_array_append_new(reps, o);
	}
	j = json_pack("{s:s, s:I, s:s, s:i, s:I, s:s, s:s, s:o, s:i}",
	              "name", vi->name,
	              "size", (json_int_t)vi->size,
	              "compress", vi->flags & TDO_VOL_LZ4 ? "lz4" : "none",
	              "epoch", (int)vi->epoch,
	              "version", (json_int_t)vi->version,
	              "primary", vi->primary,
	              "role", NAME_OF(role_names, vi->role),
	              "replicas", reps,
	              "connections", nbd_conn_count(d, vi->name));
	if (j && vi->local) {
		json_object_set_new(j, "lsn", json_integer((json_int_t)vi->lsn));
		json_object_set_new(j, "used", json_integer((json_int_t)vi->used_bytes));
	}
	if (j && vi->resync_into)
		json_object_set_new(j, "resync_into_this_copy", json_true());
	return j;
}

/* Every volume's info, sorted by name, in *OUT (caller frees); how many, or -1. */
static int all_volumes(struct daemon *d, struct tdo_vinfo **out)
{
	int n = tdo_vtier_list(d->vtier, NULL, 0), k;
	struct tdo_vinfo *vi;

	if (n < 0 || !(vi = calloc((size_t)n + 1, sizeof *vi)))
		return -1;
	k = tdo_vtier_list(d->vtier, vi, n);
	if (k < 0) {
		free(vi);
		return -1;
	}
	*out = vi;
	return k < n ? k : n;
}

json_t *render_volumes(struct daemon *d)
{
	struct tdo_vinfo *vi;
	int n = all_volumes(d, &vi);
	json_t *arr = n < 0 ? NULL : json_array();

	for (int i = 0; arr && i < n; i++)
		if (json_array_append_new(arr, render_volume(d, &vi[i]))) {
			json_decref(arr);
			arr = NULL;
		}
	if (n >= 0)
		free(vi);
	return arr;
}

json_t *render_verify(const struct tdo_verify_result *res)
{
	json_t *reps = json_array(), *diffs = json_array();

	for (int i = 0; i < res->nrep; i++)
		json_array_append_new(reps, json_pack("{s:s, s:s}", "node", res->node[i], "result",
		                                      res->status[i] ? tdo_strerror(res->status[i]) : "checked"));
	for (int k = 0; k < res->ndiffs; k++) {
		const struct tdo_verify_diff *df = &res->diffs[k];
		json_t *who = json_object();
		for (int i = 0; i < res->nrep; i++)
			if (!res->status[i]) {
				char hx[20];
				snprintf(hx, sizeof hx, "%016" PRIx64, df->sum[i]);
				json_object_set_new(who, res->node[i], json_string(hx));
			}
		json_array_append_new(diffs, json_pack("{s:I, s:I, s:o}", "offset", (json_int_t)df->offset,
		                                       "length", (json_int_t)df->length, "checksums", who));
	}
	return json_pack("{s:s, s:I, s:I, s:o, s:I, s:o, s:b}", "volume", res->name,
	                 "region_bytes", (json_int_t)res->region_bytes, "regions", (json_int_t)res->regions,
	                 "replicas", reps, "differing_regions", (json_int_t)res->differing,
	                 "differences", diffs, "identical", res->identical);
}

/* ---- status ---------------------------------------------------------------- */

/* This node, its peer listener and what it knows of each peer. */
static json_t *cluster_json(struct daemon *d)
{
	struct tdo_peer_info pi[TDO_MAX_PEERS];
	int n = tdo_cluster_peers(d->cluster, pi, TDO_MAX_PEERS);
	uint64_t now = tdo_now_usec();
	json_t *peers = json_array();

	for (int i = 0; i < n && i < TDO_MAX_PEERS; i++)
		json_array_append_new(peers, json_pack("{s:s, s:s, s:s, s:s, s:f, s:I, s:I, s:s}",
		        "id", pi[i].id, "address", pi[i].address, "state", tdo_peer_state_name(pi[i].state),
		        "dialled_by", pi[i].dials ? "us" : "peer",
		        "state_seconds", (double)(now - pi[i].since_usec) / 1e6,
		        "connects", (json_int_t)pi[i].connects, "drops", (json_int_t)pi[i].drops,
		        "last_error", pi[i].last_error));
	return json_pack("{s:s, s:s, s:s, s:o}", "name", tdo_cluster_name(d->cluster),
	                 "node_id", tdo_cluster_node_id(d->cluster), "repl", d->repl_addr, "peers", peers);
}

json_t *render_status(struct daemon *d)
{
	struct tdo_engine_stats st;
	json_t *eng, *j;

	/* the engine's byte and event counts, as /v1/status names them */
	static const struct {
		const char *key;
		size_t off;
	} figs[] = {
		{ "device_bytes", offsetof(struct tdo_engine_stats, dev_size) },
		{ "segment_bytes", offsetof(struct tdo_engine_stats, seg_size) },
		{ "capacity", offsetof(struct tdo_engine_stats, capacity) },
		{ "volume_bytes", offsetof(struct tdo_engine_stats, vol_bytes) },
		{ "live_bytes", offsetof(struct tdo_engine_stats, live_bytes) },
		{ "user_bytes", offsetof(struct tdo_engine_stats, user_bytes) },
		{ "log_bytes", offsetof(struct tdo_engine_stats, log_bytes) },
		{ "cleaner_bytes", offsetof(struct tdo_engine_stats, clean_bytes) },
		{ "segments_cleaned", offsetof(struct tdo_engine_stats, segs_cleaned) },
		{ "checkpoints", offsetof(struct tdo_engine_stats, ckpt_count) },
		{ "batches", offsetof(struct tdo_engine_stats, batches) },
		{ "batch_records", offsetof(struct tdo_engine_stats, batch_recs) },
		{ "index_bytes", offsetof(struct tdo_engine_stats, index_bytes) },
		{ "read_errors", offsetof(struct tdo_engine_stats, read_errors) },
		{ "recovery_usec", offsetof(struct tdo_engine_stats, recovery_usec) },
		{ "replayed_batches", offsetof(struct tdo_engine_stats, replayed_batches) },
	};

	tdo_engine_stats(d->engine, &st);
	eng = json_pack("{s:{s:i, s:i, s:i}, s:f, s:b}",
	                "segments", "total", (int)st.seg_count, "used", (int)st.seg_used, "free", (int)st.seg_free,
	                "write_amplification", write_amp(&st), "poisoned", st.poisoned);
	for (size_t i = 0; eng && i < sizeof figs / sizeof figs[0]; i++) {
		uint64_t v;
		memcpy(&v, (const char *)&st + figs[i].off, sizeof v);
		json_object_set_new(eng, figs[i].key, json_integer((json_int_t)v));
	}
	j = json_pack("{s:s, s:{s:s, s:s}, s:I, s:i, s:i, s:o}",
	              "device", d->device ? d->device : "",
	              "listeners", "nbd", d->nbd_addr, "admin", d->admin_addr,
	              "uptime_seconds", (json_int_t)((tdo_now_usec() - d->started_usec) / 1000000),
	              "volumes", tdo_vtier_list(d->vtier, NULL, 0),
	              "connections", nbd_conn_count(d, NULL),
	              "engine", eng);
	if (j && d->cluster) {
		json_t *cl = cluster_json(d);
		if (cl)
			json_object_set_new(cl, "volumes", render_volumes(d));
		json_object_set_new(j, "cluster", cl);
	}
	return j;
}

static void prom_family(struct sbuf *b, const char *name, const char *type, const char *help)
{
	sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void prom_u64(struct sbuf *b, const char *name, const char *type, const char *help, uint64_t v)
{
	prom_family(b, name, type, help);
	sb_printf(b, "%s %" PRIu64 "\n", name, v);
}

/* Label values: names are [A-Za-z0-9._-] today; escape anyway. */
static void prom_label(struct sbuf *b, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			sb_printf(b, "\\%c", *s);
		else if (*s == '\n')
			sb_printf(b, "\\n");
		else
			sb_printf(b, "%c", *s);
	}
}

static void prom_vol(struct sbuf *b, const char *metric, const char *vol)
{
	sb_printf(b, "%s{volume=\"", metric);
	prom_label(b, vol);
	sb_printf(b, "\"");
}

/* The per-volume gauges, one family each, a sample for every volume of
 * the volume tier's list. */
static uint64_t vg_size(struct daemon *d, const struct tdo_vinfo *vi)
{
	(void)d;
	return vi->size;
}

static uint64_t vg_used(struct daemon *d, const struct tdo_vinfo *vi)
{
	(void)d;
	return vi->used_bytes;
}

static uint64_t vg_lsn(struct daemon *d, const struct tdo_vinfo *vi)
{
	(void)d;
	return vi->lsn;
}

static uint64_t vg_connections(struct daemon *d, const struct tdo_vinfo *vi)
{
	return (uint64_t)nbd_conn_count(d, vi->name);
}

static const struct {
	const char *name, *help;
	uint64_t (*value)(struct daemon *d, const struct tdo_vinfo *vi);
} vol_gauges[] = {
	{ "testudo_volume_size_bytes", "Volume size.", vg_size },
	{ "testudo_volume_used_bytes", "Live payload bytes of this node's copy of the volume.", vg_used },
	{ "testudo_volume_lsn", "Newest LSN of this node's copy (the primary: the last given out).", vg_lsn },
	{ "testudo_volume_connections", "Open NBD connections attached to the volume.", vg_connections },
};

/* The per-volume counters metrics.c keeps, one family each, a sample for
 * every live slot (and, when per_op, every operation). */
static uint64_t vc_ops(const struct met_vol *v, int op)
{
	return v->ops[op];
}

static uint64_t vc_errors(const struct met_vol *v, int op)
{
	return v->errors[op];
}

static uint64_t vc_read(const struct met_vol *v, int op)
{
	(void)op;
	return v->bytes_read;
}

static uint64_t vc_written(const struct met_vol *v, int op)
{
	(void)op;
	return v->bytes_written;
}

static const struct {
	const char *name, *help;
	bool per_op;
	uint64_t (*value)(const struct met_vol *v, int op);
} vol_counters[] = {
	{ "testudo_volume_ops_total", "NBD requests completed, by volume and operation.", true, vc_ops },
	{ "testudo_volume_errors_total", "NBD requests that failed, by volume and operation.", true, vc_errors },
	{ "testudo_volume_read_bytes_total", "Bytes read by NBD clients.", false, vc_read },
	{ "testudo_volume_written_bytes_total", "Bytes written by NBD clients.", false, vc_written },
};

/* Slot I of the metrics table when it holds a volume's figures: not free,
 * not forgotten (a deleted volume's, still held by a closing connection). */
static const struct met_vol *live_slot(const struct metrics *m, uint32_t i)
{
	const struct met_vol *v = &m->vols[i];

	return v->name[0] && !v->forgotten ? v : NULL;
}

char *render_metrics(struct admin *a, size_t *len)
{
	struct daemon *d = a->d;
	struct metrics *m = &d->met;
	struct tdo_engine_stats st;
	struct tdo_vinfo *vi;
	struct sbuf b = { 0 };
	int n;

	tdo_engine_stats(d->engine, &st);
	if ((n = all_volumes(d, &vi)) < 0)
		return NULL;
	/* every volume is listed, with zeroes until its first request */
	for (int i = 0; i < n; i++)
		met_vol(m, vi[i].name);

	for (size_t g = 0; g < sizeof vol_gauges / sizeof vol_gauges[0]; g++) {
		prom_family(&b, vol_gauges[g].name, "gauge", vol_gauges[g].help);
		for (int i = 0; i < n; i++) {
			prom_vol(&b, vol_gauges[g].name, vi[i].name);
			sb_printf(&b, "} %" PRIu64 "\n", vol_gauges[g].value(d, &vi[i]));
		}
	}
	free(vi);

	for (size_t k = 0; k < sizeof vol_counters / sizeof vol_counters[0]; k++) {
		prom_family(&b, vol_counters[k].name, "counter", vol_counters[k].help);
		for (uint32_t i = 0; i < m->nvols; i++) {
			const struct met_vol *v = live_slot(m, i);
			for (int op = 0; v && op < (vol_counters[k].per_op ? MET_NOPS : 1); op++) {
				prom_vol(&b, vol_counters[k].name, v->name);
				if (vol_counters[k].per_op)
					sb_printf(&b, ",op=\"%s\"", met_op_name(op));
				sb_printf(&b, "} %" PRIu64 "\n", vol_counters[k].value(v, op));
			}
		}
	}
	prom_family(&b, "testudo_volume_request_duration_seconds", "histogram",
	            "NBD request latency, by volume and operation (operations seen so far).");
	for (uint32_t i = 0; i < m->nvols; i++) {
		const struct met_vol *v = live_slot(m, i);
		for (int op = 0; v && op < MET_NOPS; op++) {
			const struct met_hist *h = &v->lat[op];
			if (h->count == 0)
				continue;
			for (int k = 0; k < MET_BUCKETS; k++) {
				prom_vol(&b, "testudo_volume_request_duration_seconds_bucket", v->name);
				sb_printf(&b, ",op=\"%s\",le=\"", met_op_name(op));
				sb_seconds(&b, UINT64_C(1) << k);
				sb_printf(&b, "\"} %" PRIu64 "\n", h->bucket[k]);
			}
			prom_vol(&b, "testudo_volume_request_duration_seconds_bucket", v->name);
			sb_printf(&b, ",op=\"%s\",le=\"+Inf\"} %" PRIu64 "\n", met_op_name(op), h->count);
			prom_vol(&b, "testudo_volume_request_duration_seconds_sum", v->name);
			sb_printf(&b, ",op=\"%s\"} ", met_op_name(op));
			sb_seconds(&b, h->sum_usec);
			sb_printf(&b, "\n");
			prom_vol(&b, "testudo_volume_request_duration_seconds_count", v->name);
			sb_printf(&b, ",op=\"%s\"} %" PRIu64 "\n", met_op_name(op), h->count);
		}
	}

	prom_u64(&b, "testudo_volumes", "gauge", "Volumes this node serves.", (uint64_t)n);
	prom_u64(&b, "testudo_engine_capacity_bytes", "gauge", "Bytes volumes may total.", st.capacity);
	prom_u64(&b, "testudo_engine_volume_bytes", "gauge", "Bytes volumes do total.", st.vol_bytes);
	prom_u64(&b, "testudo_engine_live_bytes", "gauge", "Payload bytes the index refers to.", st.live_bytes);
	prom_u64(&b, "testudo_engine_index_bytes", "gauge", "Memory held by the index.", st.index_bytes);
	prom_u64(&b, "testudo_engine_user_bytes_total", "counter", "Payload bytes written by clients (device lifetime).", st.user_bytes);
	prom_u64(&b, "testudo_engine_log_bytes_total", "counter", "Bytes appended to the log (device lifetime).", st.log_bytes);
	prom_u64(&b, "testudo_engine_cleaner_bytes_total", "counter", "Payload bytes the cleaner copied (device lifetime).", st.clean_bytes);
	prom_u64(&b, "testudo_engine_segments_cleaned_total", "counter", "Segments the cleaner reclaimed.", st.segs_cleaned);
	prom_family(&b, "testudo_engine_write_amplification", "gauge", "(user + cleaner bytes) / user bytes.");
	sb_printf(&b, "testudo_engine_write_amplification %.4f\n", write_amp(&st));
	prom_family(&b, "testudo_engine_segments", "gauge", "Segments by state.");
	sb_printf(&b, "testudo_engine_segments{state=\"used\"} %u\ntestudo_engine_segments{state=\"free\"} %u\n",
	          st.seg_used, st.seg_free);
	prom_u64(&b, "testudo_engine_batches_total", "counter", "Group commits (flush batches) since the device was opened.", st.batches);
	prom_u64(&b, "testudo_engine_batch_records_total", "counter", "Records in those flush batches.", st.batch_recs);
	prom_u64(&b, "testudo_engine_checkpoints_total", "counter", "Checkpoints written since the device was opened.", st.ckpt_count);
	prom_u64(&b, "testudo_engine_read_checksum_errors_total", "counter", "Checksum failures seen by reads.", st.read_errors);
	prom_u64(&b, "testudo_engine_poisoned", "gauge", "1 once a device write or sync failed and the engine stopped.", st.poisoned ? 1 : 0);
	prom_family(&b, "testudo_engine_recovery_seconds", "gauge", "Time the last open spent recovering.");
	sb_printf(&b, "testudo_engine_recovery_seconds ");
	sb_seconds(&b, st.recovery_usec);
	sb_printf(&b, "\n");

	prom_u64(&b, "testudo_nbd_connections_total", "counter", "NBD connections accepted.", m->conns_total);
	prom_u64(&b, "testudo_nbd_connections_open", "gauge", "NBD connections open.", m->conns_open);
	prom_u64(&b, "testudo_nbd_handshakes_failed_total", "counter", "NBD connections that ended in the handshake.", m->handshakes_failed);
	prom_u64(&b, "testudo_nbd_protocol_errors_total", "counter", "NBD connections closed for a protocol violation.", m->protocol_errors);
	prom_u64(&b, "testudo_admin_requests_total", "counter", "Admin HTTP requests answered.", a->requests);
	prom_u64(&b, "testudo_admin_connections_open", "gauge", "Admin HTTP connections open.", a->nconns);
	prom_family(&b, "testudo_uptime_seconds", "gauge", "Seconds since testudod started.");
	sb_printf(&b, "testudo_uptime_seconds ");
	sb_seconds(&b, tdo_now_usec() - d->started_usec);
	sb_printf(&b, "\n");

	if (b.oom) {
		free(b.p);
		return NULL;
	}
	*len = b.len;
	return b.p;
}
