/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: the admin API: its routes, its handlers and the one map from a
 * volume tier, engine or errno code to an HTTP status. http.c frames the
 * requests; admin_render.c renders volumes, /v1/status and /metrics.
 *
 * What: the admin API on the daemon's loop; the CLI's online commands are
 * its main client. Bodies are JSON; errors are {"error": "one line"}.
 * Every volume operation goes to the volume tier, whether the node is
 * alone (a cluster of one) or one of many.
 *
 *   GET    /v1/volumes        200 [volume, ...] sorted by name
 *   POST   /v1/volumes        {"name", "size" (bytes), "compress": "lz4"|"none",
 *                             "replicas": N, "primary": ID}
 *                             201 volume (Location); 409 name taken; 507 too
 *                             large for the device; 400 bad name/size/JSON;
 *                             503 not enough nodes reachable
 *   GET    /v1/volumes/NAME   200 volume; 404
 *   PUT    /v1/volumes/NAME   {"size"} 200 volume; 404; 507; 400; 409 when
 *                             shrinking a volume an NBD client is attached to
 *   DELETE /v1/volumes/NAME   200 {"name", "deleted": true}; 404; 409 in use
 *                             ?force=1 hangs up the volume's NBD clients
 *                             first (409 "try again" while their requests
 *                             are still in flight)
 *   POST   /v1/volumes/NAME/promote {"node": ID}  200 {"volume", "primary", "epoch"}
 *   POST   /v1/volumes/NAME/verify  200 what the replicas' checksums say
 *   GET    /v1/status         device, listeners, uptime, volumes, connections,
 *                             engine figures, and the cluster's peers
 *   GET    /metrics           Prometheus text format 0.0.4
 *
 * A volume is one schema (admin_render.c render_volume()): {"name",
 * "size", "compress", "epoch", "version", "primary", "role", "replicas",
 * "connections"} and, where this node holds a copy, "lsn" and "used".
 * HEAD works wherever GET does; other methods get 405 with Allow.
 *
 * Why this way: JSON bodies are parsed by jansson, and only the keys a
 * route knows are accepted. Volume operations are asynchronous; the
 * handler holds the connection (http_hold()) and the reply goes out from
 * the volume tier's callback.
 *
 * Must never: trust a name from the network before checking it, block
 * the loop, or touch a connection after releasing it (http_release()).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "internal.h"
#include "testudo/vtier.h"
#include "admin.h"

enum vol_op { OP_NONE, OP_CREATE, OP_RESIZE, OP_DELETE, OP_PROMOTE, OP_VERIFY };

/* ---- replies ------------------------------------------------------------- */
/* Send J (a reference is stolen) as the body, with a trailing newline. */
static void send_json(struct aconn *c, int status, const char *extra, json_t *j)
{
	char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;

	json_decref(j);
	if (!s) {
		static const char oom[] = "{\"error\":\"out of memory\"}\n";
		c->close_after = true;
		http_reply(c, 500, "application/json", NULL, oom, sizeof oom - 1);
		return;
	}
	size_t len = strlen(s);
	char *t = realloc(s, len + 2);
	if (t) {
		s = t;
		s[len++] = '\n';
		s[len] = 0;
	}
	http_reply(c, status, "application/json", extra, s, len);
	free(s);
}

/* {"error": MESSAGE}; EXTRA header lines as for http_reply(). */
static void send_error_hdr(struct aconn *c, int status, const char *extra, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void send_error_hdr(struct aconn *c, int status, const char *extra, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	send_json(c, status, extra, json_pack("{s:s}", "error", msg));
}
#define send_error(c, status, ...) send_error_hdr((c), (status), NULL, __VA_ARGS__)

void admin_reply_error(struct aconn *c, int status, const char *msg)
{
	send_error(c, status, "%s", msg);
}

/* ---- volumes --------------------------------------------------------------- */

static const char *op_verb(int op)
{
	switch (op) {
	case OP_CREATE: return "create";
	case OP_RESIZE: return "resize";
	case OP_DELETE: return "delete";
	case OP_PROMOTE: return "promote";
	case OP_VERIFY: return "verify";
	default: return "look up";
	}
}

/* Codes answered the same whatever the volume: the status, and the
 * message (NULL: tdo_strerror()'s words). Those whose message names the
 * volume are in reply_failure()'s switch; any other code is a 500. */
static const struct {
	int err, status;
	const char *msg;
} plain_failures[] = {
	{ -EALREADY, 409, NULL },
	{ -ETIMEDOUT, 504, NULL },
	{ -EAGAIN, 503, NULL },
	{ -ENOTCONN, 503, NULL },
	{ -ESHUTDOWN, 503, "testudod is shutting down" },
	{ -ENOMEM, 503, "testudod is out of memory" },
	{ TDO_EPOISON, 500, "the engine stopped after a failed device write; see the daemon's log" },
};

/*
 * The one place a volume tier, engine or errno code becomes an HTTP
 * status and a message for the client: MSG when the volume tier gave one,
 * else one made here. The cause is logged for the operator. The operation
 * is c->op on volume c->op_name (size c->op_size).
 */
static void reply_failure(struct aconn *c, int err, const char *why)
{
	struct daemon *d = c->a->d;
	const char *name = c->op_name;
	char msg[400], a[32], b[32];
	int status, n;

	switch (err) {
	case TDO_ENOVOL:
		status = 404;
		snprintf(msg, sizeof msg, "no volume named '%s'", name);
		why = NULL; /* the same words whoever found it missing */
		break;
	case TDO_EVOLEXIST:
		status = 409;
		snprintf(msg, sizeof msg, "a volume named '%s' already exists", name);
		why = NULL;
		break;
	case TDO_ENOSPACE: {
		struct tdo_engine_stats st;
		uint64_t room = 0;
		tdo_engine_stats(d->engine, &st);
		if (st.capacity > st.vol_bytes)
			room = st.capacity - st.vol_bytes;
		status = 507;
		if (c->op == OP_RESIZE)
			snprintf(msg, sizeof msg,
			         "not enough space on the device to resize volume '%s' to %s (room for %s more)",
			         name, tdo_format_size(c->op_size, a, sizeof a), tdo_format_size(room, b, sizeof b));
		else
			snprintf(msg, sizeof msg,
			         "not enough space on the device for volume '%s' of %s (room for %s)",
			         name, tdo_format_size(c->op_size, a, sizeof a), tdo_format_size(room, b, sizeof b));
		why = NULL; /* ours says more */
		break;
	}
	case -ENOSPC:
		status = 507;
		snprintf(msg, sizeof msg, "the device holds as many volumes as it can (%u)", TDO_MAX_VOLS);
		break;
	case -EBUSY:
		status = 409;
		n = nbd_conn_count(d, name);
		if (n > 0)
			snprintf(msg, sizeof msg, "volume '%s' is in use (%d NBD connection%s attached)",
			         name, n, n == 1 ? "" : "s");
		else
			snprintf(msg, sizeof msg, "volume '%s' is in use (requests in flight); try again", name);
		break;
	case -EINVAL:
		status = 400;
		snprintf(msg, sizeof msg, "invalid volume name or size for '%s'", name);
		break;
	default:
		status = 500;
		snprintf(msg, sizeof msg, "%s", tdo_strerror(err));
		for (size_t i = 0; i < sizeof plain_failures / sizeof plain_failures[0]; i++)
			if (plain_failures[i].err == err) {
				status = plain_failures[i].status;
				if (plain_failures[i].msg)
					snprintf(msg, sizeof msg, "%s", plain_failures[i].msg);
				break;
			}
		break;
	}
	if (why && *why)
		snprintf(msg, sizeof msg, "%s", why);
	tdo_log(status >= 500 ? TDO_LOG_ERROR : TDO_LOG_INFO, "admin", "%s: %s volume %s: %s (%d): %d %s",
	        c->peer, op_verb(c->op), name, msg, err, status, http_reason(status));
	send_error(c, status, "%s", msg);
}

/* Reply with volume NAME as it is now. */
static void reply_volume(struct aconn *c, int status, const char *name)
{
	struct tdo_vinfo vi;
	char loc[128];
	int err = tdo_vtier_info(c->a->d->vtier, name, &vi);

	if (err) {
		reply_failure(c, err, NULL);
		return;
	}
	snprintf(loc, sizeof loc, "Location: /v1/volumes/%s\r\n", vi.name);
	send_json(c, status, status == 201 ? loc : NULL, render_volume(c->a->d, &vi));
}

/* The connection is ours again: false when its client went away meanwhile
 * (then nothing is sent, and C may be gone). */
static bool op_returns(struct aconn *c, int status, const char *msg)
{
	bool gone = c->state == AS_CLOSING;

	if (gone && status)
		tdo_log(TDO_LOG_WARN, "admin", "%s volume %s: %s", op_verb(c->op), c->op_name,
		        msg ? msg : tdo_strerror(status));
	http_release(c);
	return !gone;
}

static void on_vol_op_done(void *arg, int status, const char *msg)
{
	struct aconn *c = arg;
	char a[32];

	if (status == 0)
		tdo_log(TDO_LOG_INFO, "admin", "%s volume %s%s%s", c->op == OP_CREATE ? "created" :
		        c->op == OP_RESIZE ? "resized" : "deleted", c->op_name,
		        c->op == OP_DELETE ? "" : ", ",
		        c->op == OP_DELETE ? "" : tdo_format_size(c->op_size, a, sizeof a));
	if (!op_returns(c, status, msg))
		return;
	if (status)
		reply_failure(c, status, msg);
	else if (c->op == OP_DELETE)
		send_json(c, 200, NULL, json_pack("{s:s, s:b}", "name", c->op_name, "deleted", 1));
	else
		reply_volume(c, c->op == OP_CREATE ? 201 : 200, c->op_name);
	c->op = OP_NONE;
}

static void on_promote_done(void *arg, int status, const char *msg, uint32_t epoch)
{
	struct aconn *c = arg;

	if (!op_returns(c, status, msg))
		return;
	if (status)
		reply_failure(c, status, msg);
	else
		send_json(c, 200, NULL, json_pack("{s:s, s:s, s:i}", "volume", c->op_name, "primary", c->op_node,
		                                  "epoch", (int)epoch));
	c->op = OP_NONE;
}

static void on_verify_done(void *arg, int status, const char *msg, const struct tdo_verify_result *res)
{
	struct aconn *c = arg;

	if (!op_returns(c, status, msg))
		return;
	if (res) /* even when some replicas could not be checked: the result says which */
		send_json(c, 200, NULL, render_verify(res));
	else
		reply_failure(c, status, msg);
	c->op = OP_NONE;
}

/* Hand c->op to the volume tier; the reply goes out from its callback. */
static void start_vol_op(struct aconn *c, int replicas, const char *primary)
{
	struct daemon *d = c->a->d;
	char err[256] = "";
	int rc;

	http_hold(c);
	switch (c->op) {
	case OP_CREATE:
		rc = tdo_vtier_create(d->vtier, c->op_name, c->op_size, c->op_flags, replicas, primary, on_vol_op_done,
		                      c, err, sizeof err);
		break;
	case OP_RESIZE:
		rc = tdo_vtier_resize(d->vtier, c->op_name, c->op_size, on_vol_op_done, c, err, sizeof err);
		break;
	case OP_PROMOTE:
		rc = tdo_vtier_promote(d->vtier, c->op_name, c->op_node, on_promote_done, c, err, sizeof err);
		break;
	case OP_VERIFY:
		rc = tdo_vtier_verify(d->vtier, c->op_name, on_verify_done, c, err, sizeof err);
		break;
	default:
		rc = tdo_vtier_delete(d->vtier, c->op_name, on_vol_op_done, c, err, sizeof err);
		break;
	}
	if (rc) {
		http_release(c);
		reply_failure(c, rc, err);
		c->op = OP_NONE;
	}
}

/*
 * The JSON object in the request body, with only the keys in ALLOWED (a
 * NULL-terminated list). NULL after a 400 was sent.
 */
static json_t *body_object(struct aconn *c, const char *const *allowed)
{
	json_error_t je;
	json_t *j, *v;
	const char *key;

	if (c->req.body_len == 0) {
		send_error(c, 400, "the request needs a JSON object body");
		return NULL;
	}
	j = json_loadb(c->in + c->req.head_len, c->req.body_len, JSON_REJECT_DUPLICATES, &je);
	if (!j) {
		send_error(c, 400, "invalid JSON at line %d column %d: %s", je.line, je.column, je.text);
		return NULL;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		send_error(c, 400, "the request body must be a JSON object");
		return NULL;
	}
	json_object_foreach(j, key, v) {
		bool ok = false;
		for (const char *const *k = allowed; *k; k++)
			ok |= strcmp(key, *k) == 0;
		if (!ok) {
			send_error(c, 400, "unknown field '%.64s'", key);
			json_decref(j);
			return NULL;
		}
	}
	return j;
}

/* "size": a positive integer number of bytes, a multiple of 512. */
static int body_size(struct aconn *c, json_t *j, uint64_t *out)
{
	json_t *v = json_object_get(j, "size");

	if (!v) {
		send_error(c, 400, "missing \"size\" (bytes)");
		return -1;
	}
	if (!json_is_integer(v) || json_integer_value(v) <= 0 ||
	    json_integer_value(v) % TDO_SECTOR_SIZE) {
		send_error(c, 400, "\"size\" must be a positive integer number of bytes, a multiple of %u",
		           TDO_SECTOR_SIZE);
		return -1;
	}
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

static bool name_ok(struct aconn *c, const char *name)
{
	if (tdo_vol_name_valid(name))
		return true;
	send_error(c, 400, "invalid volume name '%.64s' (1-63 of A-Z a-z 0-9 . _ -, not starting with . or -)",
	           name);
	return false;
}

static void h_vol_list(struct aconn *c)
{
	json_t *arr = render_volumes(c->a->d);

	if (!arr)
		reply_failure(c, -ENOMEM, NULL);
	else
		send_json(c, 200, NULL, arr);
}

static void h_vol_create(struct aconn *c)
{
	static const char *const keys[] = { "name", "size", "compress", "replicas", "primary", NULL };
	json_t *j = body_object(c, keys), *v;
	const char *name;
	int replicas = 0;
	const char *primary = NULL;

	if (!j)
		return;
	v = json_object_get(j, "name");
	if (!json_is_string(v)) {
		send_error(c, 400, "missing \"name\" (a string)");
		goto out;
	}
	name = json_string_value(v);
	if (!name_ok(c, name) || body_size(c, j, &c->op_size))
		goto out;
	c->op_flags = 0;
	v = json_object_get(j, "compress");
	if (v && (!json_is_string(v) || (strcmp(json_string_value(v), "lz4") && strcmp(json_string_value(v), "none")))) {
		send_error(c, 400, "\"compress\" must be \"lz4\" or \"none\"");
		goto out;
	}
	if (v && !strcmp(json_string_value(v), "lz4"))
		c->op_flags = TDO_VOL_LZ4;
	v = json_object_get(j, "replicas");
	if (v && (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > TDO_REP_MAX)) {
		send_error(c, 400, "\"replicas\" must be an integer from 1 to %d", TDO_REP_MAX);
		goto out;
	}
	if (v)
		replicas = (int)json_integer_value(v);
	v = json_object_get(j, "primary");
	if (v && (!json_is_string(v) || !tdo_node_id_valid(json_string_value(v)))) {
		send_error(c, 400, "\"primary\" must be a node id");
		goto out;
	}
	if (v)
		primary = json_string_value(v);
	snprintf(c->op_name, sizeof c->op_name, "%s", name);
	c->op = OP_CREATE;
	start_vol_op(c, replicas, primary);
out:
	json_decref(j);
}

static void h_vol_get(struct aconn *c, const char *name)
{
	snprintf(c->op_name, sizeof c->op_name, "%s", name);
	reply_volume(c, 200, name);
}

static void h_vol_resize(struct aconn *c, const char *name)
{
	static const char *const keys[] = { "size", NULL };
	struct daemon *d = c->a->d;
	struct tdo_vinfo vi;
	json_t *j = body_object(c, keys);
	int err;

	snprintf(c->op_name, sizeof c->op_name, "%s", name);
	c->op = OP_RESIZE;
	if (!j || body_size(c, j, &c->op_size))
		goto out;
	err = tdo_vtier_info(d->vtier, name, &vi);
	if (err) {
		reply_failure(c, err, NULL);
		goto out;
	}
	/* an attached client would find its end cut off under it */
	if (c->op_size < vi.size && nbd_conn_count(d, name) > 0) {
		reply_failure(c, -EBUSY, NULL);
		goto out;
	}
	json_decref(j);
	start_vol_op(c, 0, NULL);
	return;
out:
	c->op = OP_NONE;
	json_decref(j);
}

static void h_vol_delete(struct aconn *c, const char *name, bool force)
{
	struct daemon *d = c->a->d;

	snprintf(c->op_name, sizeof c->op_name, "%s", name);
	c->op = OP_DELETE;
	if (force && nbd_conn_count(d, name) > 0) {
		/* the clients see their connection die, as if the node had */
		tdo_log(TDO_LOG_WARN, "admin", "%s: forced delete of volume %s: closing its NBD connections",
		        c->peer, name);
		nbd_conn_close_volume(d, name, "volume deleted (forced)");
	}
	if (nbd_conn_count(d, name) > 0) {
		reply_failure(c, -EBUSY, NULL);
		c->op = OP_NONE;
		return;
	}
	start_vol_op(c, 0, NULL);
}

/* POST /v1/volumes/NAME/promote {"node": ID} and POST /v1/volumes/NAME/verify */
static void h_vol_action(struct aconn *c, const char *name, const char *action)
{
	static const char *const keys[] = { "node", NULL };
	json_t *j = NULL, *v;

	snprintf(c->op_name, sizeof c->op_name, "%s", name);
	if (!strcmp(action, "verify")) {
		c->op = OP_VERIFY;
		start_vol_op(c, 0, NULL);
		return;
	}
	if (!(j = body_object(c, keys)))
		return;
	v = json_object_get(j, "node");
	if (!json_is_string(v) || !tdo_node_id_valid(json_string_value(v))) {
		send_error(c, 400, "missing \"node\" (a node id)");
		json_decref(j);
		return;
	}
	c->op = OP_PROMOTE;
	snprintf(c->op_node, sizeof c->op_node, "%s", json_string_value(v));
	start_vol_op(c, 0, NULL);
	json_decref(j);
}

/* ---- status and metrics (admin_render.c) ---------------------------------- */

static void h_status(struct aconn *c)
{
	send_json(c, 200, NULL, render_status(c->a->d));
}

static void h_metrics(struct aconn *c)
{
	size_t len;
	char *text = render_metrics(c->a, &len);

	if (!text)
		reply_failure(c, -ENOMEM, NULL);
	else
		http_reply(c, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, text, len);
	free(text);
}

/* ---- routing --------------------------------------------------------------- */

static bool method_is(const struct aconn *c, const char *m)
{
	return strcmp(c->req.method, m) == 0;
}

void admin_dispatch(struct aconn *c)
{
	struct daemon *d = c->a->d;
	const char *t = c->in + c->req.target_off;
	size_t plen = c->req.target_len;
	const char *q = memchr(t, '?', plen);
	bool get, force = false;
	char name[TDO_NAME_MAX + 1];

	c->op = OP_NONE;
	c->op_name[0] = 0;
	if (q) {
		/* only DELETE on a volume takes one (force=1); the rest is ignored */
		force = http_query_has(q + 1, c->req.target_len - (size_t)(q - t) - 1, "force=1");
		plen = (size_t)(q - t);
	}
	if (memchr(t, '#', c->req.target_len)) {
		c->close_after = true;
		send_error(c, 400, "a request target has no fragment");
		return;
	}
	c->head_only = method_is(c, "HEAD");
	get = method_is(c, "GET") || c->head_only;
	tdo_log(TDO_LOG_DEBUG, "admin", "%s: %s %.*s", c->peer, c->req.method, (int)c->req.target_len, t);
	if (!d->engine || d->stopping) {
		send_error(c, 503, "testudod is shutting down");
		return;
	}
#define PATH_IS(p) (plen == sizeof(p) - 1 && memcmp(t, p, plen) == 0)
	if (PATH_IS("/v1/volumes")) {
		if (get)
			h_vol_list(c);
		else if (method_is(c, "POST"))
			h_vol_create(c);
		else
			send_error_hdr(c, 405, "Allow: GET, HEAD, POST\r\n", "%s is not allowed on /v1/volumes", c->req.method);
	} else if (plen > 12 && memcmp(t, "/v1/volumes/", 12) == 0 && memchr(t + 12, '/', plen - 12)) {
		const char *slash = memchr(t + 12, '/', plen - 12);
		size_t alen = plen - (size_t)(slash + 1 - t);
		const char *action = alen == 7 && !memcmp(slash + 1, "promote", 7) ? "promote" :
		                     alen == 6 && !memcmp(slash + 1, "verify", 6) ? "verify" : NULL;
		if (!action || http_decode_segment(t + 12, (size_t)(slash - (t + 12)), name, sizeof name) < 0) {
			send_error(c, 404, "no such endpoint: %.*s (a volume has /promote and /verify)",
			           (int)(plen > 200 ? 200 : plen), t);
			return;
		}
		if (!method_is(c, "POST")) {
			send_error_hdr(c, 405, "Allow: POST\r\n", "%s is not allowed on /%s", c->req.method, action);
			return;
		}
		if (name_ok(c, name))
			h_vol_action(c, name, action);
	} else if (plen > 12 && memcmp(t, "/v1/volumes/", 12) == 0 && !memchr(t + 12, '/', plen - 12)) {
		if (http_decode_segment(t + 12, plen - 12, name, sizeof name) < 0) {
			send_error(c, 400, "invalid volume name in the path");
			return;
		}
		if (!get && !method_is(c, "PUT") && !method_is(c, "DELETE")) {
			send_error_hdr(c, 405, "Allow: GET, HEAD, PUT, DELETE\r\n", "%s is not allowed on a volume",
			               c->req.method);
			return;
		}
		if (!name_ok(c, name))
			return;
		if (get)
			h_vol_get(c, name);
		else if (method_is(c, "PUT"))
			h_vol_resize(c, name);
		else
			h_vol_delete(c, name, force);
	} else if (PATH_IS("/v1/status")) {
		if (get)
			h_status(c);
		else
			send_error_hdr(c, 405, "Allow: GET, HEAD\r\n", "%s is not allowed on /v1/status", c->req.method);
	} else if (PATH_IS("/metrics")) {
		if (get)
			h_metrics(c);
		else
			send_error_hdr(c, 405, "Allow: GET, HEAD\r\n", "%s is not allowed on /metrics", c->req.method);
	} else {
		send_error(c, 404, "no such endpoint: %.*s (try /v1/volumes, /v1/status, /metrics)",
		           (int)(plen > 200 ? 200 : plen), t);
	}
#undef PATH_IS
}
