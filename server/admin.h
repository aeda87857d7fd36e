/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The admin endpoint's internals, grouped by the file that defines them:
 * http_parse.c (the request parser), http.c (connections and framing),
 * admin.c (routes and handlers), admin_render.c (/v1/status and
 * /metrics) and metrics.c. internal.h holds what the rest of the daemon
 * calls.
 */
#ifndef TESTUDO_SERVER_ADMIN_H
#define TESTUDO_SERVER_ADMIN_H

#include <jansson.h>

#include "internal.h"

/* ---- http_parse.c: the request parser (no libuv, no allocation) ------------ */

#define HTTP_MAX_HEAD    (16u << 10)   /* request line and headers */
#define HTTP_MAX_BODY    (64u << 10)
#define HTTP_MAX_HEADERS 100

/* A request's line and headers, parsed; offsets into the buffer parsed. */
struct http_req {
	char method[16];
	size_t target_off, target_len;
	size_t head_len;            /* request line + headers + blank line */
	size_t body_len;            /* Content-Length (0 without one) */
	int minor;                  /* HTTP/1.<minor> */
	bool keep_alive;            /* 1.1 without "close", 1.0 with "keep-alive" */
	bool expect_continue;       /* Expect: 100-continue */
};

/*
 * Parse the request line and headers at the start of BUF (LEN bytes).
 * Returns head_len (> 0) with *OUT filled, the body being the next
 * out->body_len bytes; 0 when no complete head is there yet and nothing
 * so far is wrong; or -STATUS (400, 413, 417, 431, 501, 505) with *WHY
 * set to one line for the client. *OUT is reset first, whatever the result.
 */
int http_parse(const char *buf, size_t len, struct http_req *out, const char **why);
/* Bytes of empty lines (CRLF) at the start of BUF, at most 64: a robust
 * server ignores them before a request (RFC 9112 2.2); the caller drops them. */
size_t http_skip_empty_lines(const char *buf, size_t len);
/* Does the query string Q (LEN bytes, no '?') hold the parameter PARAM exactly? */
bool http_query_has(const char *q, size_t len, const char *param);
/* Percent-decode a path segment S[0, N) into OUT (OUTLEN bytes with the NUL);
 * -1 when it does not fit or is malformed (a bad escape, %00). */
int http_decode_segment(const char *s, size_t n, char *out, size_t outlen);

/* ---- http.c: connections, framing, replies ------------------------------- */

/* The endpoint: one per daemon, hung off d->admin_listener.data. */
struct admin {
	struct daemon *d;
	struct tdo_list conns;      /* struct aconn: every connection not yet freed */
	unsigned nconns;
	bool shutting;              /* http_shutdown() called */
	bool listener_closed;
	uint64_t requests, conns_total;
};

enum aconn_state {
	AS_HEAD,                    /* reading the request line and headers */
	AS_BODY,                    /* reading req.body_len bytes of body */
	AS_VOLUME_OP,               /* a volume operation is with the volume tier */
	AS_WRITING,                 /* the reply is being written */
	AS_LINGER,                  /* final reply sent, write side shut: draining input */
	AS_CLOSING,                 /* uv_close called; freed by the last callback */
};

/*
 * One client connection. Invariants: reading is on only in AS_HEAD,
 * AS_BODY and AS_LINGER; in[0, in_len) are bytes read and not yet
 * consumed, the current request first. Only http.c writes state, refs,
 * reading and the input; admin.c reads the request and keeps its volume
 * operation in op*.
 */
struct aconn {
	struct tdo_list link;       /* admin.conns */
	struct admin *a;
	uv_tcp_t tcp;
	uv_timer_t timer;           /* request, idle, write and linger deadline */
	uv_shutdown_t shut;
	int refs;                   /* open handles + volume operations pending */
	int state;                  /* enum aconn_state */
	bool reading;
	char peer[64];

	char *in;
	size_t in_len, in_cap;

	/* the request being handled; offsets into in (it may move) */
	struct http_req req;
	bool continue_sent;         /* the interim 100 Continue is queued */
	bool head_only;             /* HEAD: headers without the body (admin.c sets it) */

	/* the volume operation with the volume tier (AS_VOLUME_OP) */
	int op;                     /* enum vol_op (admin.c) */
	char op_name[TDO_NAME_MAX + 1];
	uint64_t op_size;
	uint32_t op_flags;
	char op_node[TDO_NODE_ID_MAX + 1]; /* OP_PROMOTE: the node to promote */

	bool close_after;           /* the reply being written is the last */
};

/* Listening and shutting down: internal.h. */

/* The reason phrase of STATUS ("Unknown" for one we never send). */
const char *http_reason(int status);
/*
 * Send the reply to the current request: STATUS, content type, EXTRA
 * header lines (each ending in CRLF; may be NULL) and BODY (copied).
 * Reading stays off until it is written.
 */
void http_reply(struct aconn *c, int status, const char *ctype, const char *extra,
                const char *body, size_t blen);
/* The request goes to the volume tier: stop reading and keep C until http_release(). */
void http_hold(struct aconn *c);
/* Drop what http_hold() took; if C was closed meanwhile it may be freed:
 * do not touch it after, unless its state was not AS_CLOSING. */
void http_release(struct aconn *c);

/* ---- admin.c: routes and handlers ------------------------------------------ */

/* Answer the complete request in C (body at c->in + c->req.head_len), at
 * once or from a volume tier callback; either way through http_reply(). */
void admin_dispatch(struct aconn *c);
/* Reply STATUS with {"error": MSG}: the one error body, http.c's too. */
void admin_reply_error(struct aconn *c, int status, const char *msg);

/* ---- admin_render.c: /v1/status and /metrics -------------------------------- */

/* A volume as the admin API shows it, the one schema: name, size,
 * compress, epoch, version, primary, role, replicas, connections, and
 * with a copy on this node lsn and used. */
json_t *render_volume(struct daemon *d, const struct tdo_vinfo *vi);
/* Every volume, sorted by name; NULL when out of memory. */
json_t *render_volumes(struct daemon *d);
/* What verify found. */
json_t *render_verify(const struct tdo_verify_result *res);
/* The daemon's state as GET /v1/status shows it; NULL when out of memory. */
json_t *render_status(struct daemon *d);
/* Every figure in Prometheus text; *LEN bytes, caller frees; NULL when out of memory. */
char *render_metrics(struct admin *a, size_t *len);

/* ---- metrics.c ---------------------------------------------------------- */

/*
 * Drop volume NAME's figures (its volume is gone). The slot is reused
 * once the last connection holding it has let go (met_vol_put()).
 */
void met_forget(struct metrics *m, const char *name);

#endif
