/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: a node's connections to its peers. Each pair of nodes shares
 * one TCP connection, dialled by the node whose id sorts first and kept
 * open for good: a dropped connection is dialled again with back-off
 * (100 ms doubling to 2 s). The first message each way is the handshake
 * (HELLO, then WELCOME or REJECT) that checks the cluster name and both
 * node ids; then PINGs every heartbeat keep the link known to be alive:
 * a peer silent for dead_ms is declared down and its connection closed,
 * so a frozen (SIGSTOPped) node is noticed as fast as a dead one.
 * Frames are checked (magic, version, length bound, checksum) before
 * anything is allocated for or acted on; a bad frame closes that one
 * connection. Every handle is freed in its close callback; the cluster
 * itself with the last one after tdo_cluster_stop().
 * Limits: until its handshake passed a connection reads only one HELLO's
 * worth (a frame header and struct tdo_rm_hello, so nothing large is
 * allocated for a stranger), at most PEER_MAX_HANDSHAKES of them are
 * open, and each has HANDSHAKE_MS; a peer whose send queue passes
 * PEER_MAX_QUEUED is treated as down, as a silent one is.
 * What it must never do: treat a connection as a peer's before its
 * handshake passed, or keep two live connections to one peer.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "testudo/cluster.h"
#include "testudo/net.h"
#include "testudo/util.h"

struct peer;

struct pconn {
	struct tdo_cluster *c;
	struct peer *p;             /* set when the handshake names the peer */
	bool outbound, closing, up;
	uv_tcp_t tcp;
	uv_connect_t creq;
	char *rx;                   /* unparsed bytes rx[0..rx_len) */
	size_t rx_len, rx_cap;
	uint64_t born_usec, last_rx_usec;
	char *tx;                   /* messages queued for the next flush */
	size_t tx_len, tx_cap;
	bool tx_close_after, tx_queued;
	bool overloaded;            /* the send queue passed PEER_MAX_QUEUED: closed by the next
	                               heartbeat, never inside a send (the volume tier's down hook
	                               must not run under its own send call) */
	struct pconn *next, *tx_next;
};

struct peer {
	struct tdo_cluster *c;
	struct tdo_peer_conf conf;
	bool dials;
	enum tdo_peer_state state;
	struct pconn *conn;
	uint64_t since_usec, connects, drops, remote_boot;
	unsigned backoff_ms;
	uv_timer_t retry;
	char last_error[160];
};

struct tdo_cluster {
	uv_loop_t *loop;
	char name[TDO_CLUSTER_MAX + 1];
	char id[TDO_NODE_ID_MAX + 1];
	uint64_t boot;
	struct peer peers[TDO_MAX_PEERS];
	int npeers;
	uv_tcp_t listener;
	uv_timer_t hb;
	unsigned heartbeat_ms, dead_ms;
	struct pconn *conns;
	struct pconn *tx_list;      /* connections with queued messages */
	uv_idle_t flush;            /* runs once per loop turn while tx_list is not empty */
	struct tdo_cluster_hooks hooks;
	bool stopping;
	int handles;                /* open handles; the struct goes with the last */
};

#define HANDSHAKE_MS 5000    /* from accept or connect to WELCOME, or the connection is closed */
/* Accepted connections still in their handshake; more are closed at once,
 * said at most every PEER_REFUSED_LOG_MS */
#define PEER_MAX_HANDSHAKES 32
#define PEER_REFUSED_LOG_MS 10000
/* What the receive buffer holds before the handshake passed */
#define PEER_HS_RX (sizeof(struct tdo_rmsg) + sizeof(struct tdo_rm_hello))
/* Bytes queued to one peer (ours and libuv's) before it is declared down:
 * a peer that stops reading must not make us hold its traffic for ever */
#define PEER_MAX_QUEUED (256u << 20)

static void conn_close(struct pconn *pc, const char *why);

const char *tdo_peer_state_name(enum tdo_peer_state s)
{
	return s == TDO_PEER_UP ? "up" : s == TDO_PEER_CONNECTING ? "connecting" : "down";
}

bool tdo_node_id_valid(const char *id)
{
	return tdo_name_chars_ok(id, TDO_NODE_ID_MAX);
}

int tdo_peer_parse(const char *s, struct tdo_peer_conf *p)
{
	const char *eq = strchr(s, '=');
	memset(p, 0, sizeof(*p));
	if (!eq || (size_t)(eq - s) > TDO_NODE_ID_MAX)
		return -EINVAL;
	memcpy(p->id, s, (size_t)(eq - s));
	if (!tdo_node_id_valid(p->id))
		return -EINVAL;
	const char *hp = eq + 1;
	/* a peer needs its host spelled out, and a real port */
	if (*hp == ':' || tdo_parse_hostport(hp, p->host, sizeof(p->host), &p->port) || p->port < 1)
		return -EINVAL;
	/* numeric addresses only: the loop never blocks on a name lookup */
	struct sockaddr_in6 a6;
	struct sockaddr_in a4;
	if (uv_ip4_addr(p->host, p->port, &a4) && uv_ip6_addr(p->host, p->port, &a6))
		return -EINVAL;
	return 0;
}

/* ---- sending ---- */

struct wreq {
	uv_write_t w;
	bool close_after;
	char *data;                 /* a connection's queued messages, handed over whole */
};

static void write_cb(uv_write_t *w, int status)
{
	struct wreq *r = (struct wreq *)w;
	struct pconn *pc = w->data;
	if (status < 0 && status != UV_ECANCELED)
		conn_close(pc, uv_strerror(status));
	else if (r->close_after)
		conn_close(pc, NULL);
	free(r->data);
	free(r);
}

/* Write out everything queued on PC as one write. */
static void pc_flush(struct pconn *pc)
{
	if (pc->closing || !pc->tx_len)
		return;
	struct wreq *r = malloc(sizeof(*r));
	if (!r) {
		conn_close(pc, "out of memory");
		return;
	}
	/* the queue itself goes out; the next message starts a new one */
	r->data = pc->tx;
	r->close_after = pc->tx_close_after;
	r->w.data = pc;
	uv_buf_t b = uv_buf_init(r->data, (unsigned)pc->tx_len);
	pc->tx = NULL;
	pc->tx_len = pc->tx_cap = 0;
	int rc = uv_write(&r->w, (uv_stream_t *)&pc->tcp, &b, 1, write_cb);
	if (rc < 0) {
		free(r->data);
		free(r);
		conn_close(pc, uv_strerror(rc));
	}
}

/* Batching: messages queued during one loop turn leave in one write. */
static void flush_cb(uv_idle_t *h)
{
	struct tdo_cluster *c = h->data;
	struct pconn *l = c->tx_list;
	c->tx_list = NULL;
	uv_idle_stop(&c->flush);
	for (struct pconn *pc = l, *next; pc; pc = next) {
		next = pc->tx_next;
		pc->tx_queued = false;
		pc_flush(pc);
	}
}

#define TX_FLUSH_AT (4u << 20)

static int send_msg2(struct pconn *pc, uint16_t type, const void *a, uint32_t alen, const void *b,
		     uint32_t blen, bool close_after)
{
	if (pc->closing)
		return -ECANCELED;
	uint32_t len = alen + blen;
	size_t need = pc->tx_len + sizeof(struct tdo_rmsg) + len;
	if (pc->overloaded || need + uv_stream_get_write_queue_size((uv_stream_t *)&pc->tcp) > PEER_MAX_QUEUED) {
		pc->overloaded = true; /* heartbeat_cb closes it */
		return -ENOBUFS;
	}
	if (need > pc->tx_cap) {
		size_t cap = pc->tx_cap ? pc->tx_cap : 64 * 1024;
		while (cap < need)
			cap *= 2;
		char *n = realloc(pc->tx, cap);
		if (!n) {
			conn_close(pc, "out of memory");
			return -ENOMEM;
		}
		pc->tx = n;
		pc->tx_cap = cap;
	}
	struct tdo_rmsg h = { TDO_RM_MAGIC, TDO_RM_VERSION, type, 0, len, 0 };
	char *o = pc->tx + pc->tx_len;
	if (alen)
		memcpy(o + sizeof(h), a, alen);
	if (blen)
		memcpy(o + sizeof(h) + alen, b, blen);
	h.rm_check = (uint32_t)tdo_csum_two(&h, offsetof(struct tdo_rmsg, rm_check), o + sizeof(h), len);
	memcpy(o, &h, sizeof(h));
	pc->tx_len = need;
	pc->tx_close_after |= close_after;
	if (close_after || pc->tx_len >= TX_FLUSH_AT) {
		pc_flush(pc);
		return pc->closing && !close_after ? -ECANCELED : 0;
	}
	if (!pc->tx_queued) {
		pc->tx_queued = true;
		pc->tx_next = pc->c->tx_list;
		pc->c->tx_list = pc;
		uv_idle_start(&pc->c->flush, flush_cb);
	}
	return 0;
}

static int send_msg(struct pconn *pc, uint16_t type, const void *payload, uint32_t len, bool close_after)
{
	return send_msg2(pc, type, payload, len, NULL, 0, close_after);
}

static void fill_hello(struct tdo_cluster *c, struct tdo_rm_hello *h, const char *to)
{
	memset(h, 0, sizeof(*h));
	snprintf(h->rh_cluster, sizeof(h->rh_cluster), "%s", c->name);
	snprintf(h->rh_from, sizeof(h->rh_from), "%s", c->id);
	snprintf(h->rh_to, sizeof(h->rh_to), "%s", to);
	h->rh_boot = c->boot;
}

static void reject(struct pconn *pc, uint32_t reason, const char *fmt, const char *a, const char *b)
{
	struct tdo_rm_reject rj = { .rj_reason = reason };
	snprintf(rj.rj_text, sizeof(rj.rj_text), fmt, a, b);
	tdo_log(TDO_LOG_WARN, "peer", "refused a peer connection: %s", rj.rj_text);
	send_msg(pc, TDO_RM_REJECT, &rj, sizeof(rj), true);
}

/* ---- peer state ---- */

static void set_state(struct peer *p, enum tdo_peer_state s)
{
	if (p->state != s)
		p->since_usec = tdo_now_usec();
	p->state = s;
}

static void dial(struct peer *p);

static void retry_cb(uv_timer_t *t)
{
	struct peer *p = t->data;
	if (!p->c->stopping && !p->conn)
		dial(p);
}

static void schedule_dial(struct peer *p)
{
	if (!p->dials || p->c->stopping)
		return;
	unsigned d = p->backoff_ms ? p->backoff_ms : 100;
	p->backoff_ms = d * 2 > 2000 ? 2000 : d * 2;
	uv_timer_start(&p->retry, retry_cb, d, 0);
}

static void peer_up(struct peer *p, struct pconn *pc, uint64_t boot)
{
	if (p->conn && p->conn != pc)
		conn_close(p->conn, "replaced by a newer connection");
	p->conn = pc;
	pc->p = p;
	pc->up = true;
	p->connects++;
	p->backoff_ms = 0;
	p->last_error[0] = '\0';
	bool restarted = p->remote_boot && p->remote_boot != boot;
	p->remote_boot = boot;
	set_state(p, TDO_PEER_UP);
	tdo_log(TDO_LOG_INFO, "peer", "%s up (%s%s)", p->conf.id, pc->outbound ? "dialled" : "it dialled",
		restarted ? ", it restarted" : "");
}

/* Tell the volume tier, once our side of the handshake is on the wire
 * (its messages must follow the WELCOME, never precede it). */
static void announce_up(struct peer *p)
{
	if (p->c->hooks.up && p->conn && p->conn->up && !p->conn->closing)
		p->c->hooks.up(p->c->hooks.arg, (int)(p - p->c->peers));
}

/* ---- connections ---- */

static void handle_closed(uv_handle_t *h)
{
	struct tdo_cluster *c = h->data;
	if (--c->handles == 0)
		free(c);
}

static void pc_closed(uv_handle_t *h)
{
	struct pconn *pc = h->data;
	struct tdo_cluster *c = pc->c;
	if (pc->tx_queued)
		for (struct pconn **pp = &c->tx_list; *pp; pp = &(*pp)->tx_next)
			if (*pp == pc) {
				*pp = pc->tx_next;
				break;
			}
	free(pc->tx);
	for (struct pconn **pp = &c->conns; *pp; pp = &(*pp)->next)
		if (*pp == pc) {
			*pp = pc->next;
			break;
		}
	free(pc->rx);
	free(pc);
	if (--c->handles == 0)
		free(c);
}

/* WHY NULL: closed on purpose, nothing to report */
static void conn_close(struct pconn *pc, const char *why)
{
	if (pc->closing)
		return;
	pc->closing = true;
	struct peer *p = pc->p;
	if (p && p->conn == pc) {
		p->conn = NULL;
		if (pc->up) {
			p->drops++;
			if (!pc->c->stopping)
				tdo_log(TDO_LOG_WARN, "peer", "%s down: %s", p->conf.id, why ? why : "connection closed");
		}
		if (why)
			snprintf(p->last_error, sizeof(p->last_error), "%s", why);
		set_state(p, TDO_PEER_DOWN);
		schedule_dial(p);
		if (pc->up && pc->c->hooks.down && !pc->c->stopping)
			pc->c->hooks.down(pc->c->hooks.arg, (int)(p - pc->c->peers));
	}
	uv_close((uv_handle_t *)&pc->tcp, pc_closed);
}

static struct peer *find_peer(struct tdo_cluster *c, const char *id)
{
	for (int i = 0; i < c->npeers; i++)
		if (!strcmp(c->peers[i].conf.id, id))
			return &c->peers[i];
	return NULL;
}

/* A checked frame: act on it. Returns false when the connection closed. */
static bool on_msg(struct pconn *pc, const struct tdo_rmsg *h, const char *pl)
{
	struct tdo_cluster *c = pc->c;
	struct tdo_rm_hello hello;
	if (!pc->up) {
		/* the handshake, and nothing else, until it passes */
		if (!pc->outbound && h->rm_type == TDO_RM_HELLO && h->rm_length == sizeof(hello)) {
			memcpy(&hello, pl, sizeof(hello));
			hello.rh_cluster[TDO_CLUSTER_MAX] = hello.rh_from[TDO_NODE_ID_MAX] = hello.rh_to[TDO_NODE_ID_MAX] = 0;
			struct peer *p = find_peer(c, hello.rh_from);
			if (strcmp(hello.rh_cluster, c->name))
				reject(pc, TDO_RJ_CLUSTER, "cluster '%s' is not this node's '%s'", hello.rh_cluster, c->name);
			else if (strcmp(hello.rh_to, c->id))
				reject(pc, TDO_RJ_NOT_ME, "dialled node '%s' but this is '%s'", hello.rh_to, c->id);
			else if (!p)
				reject(pc, TDO_RJ_UNKNOWN, "node '%s' is not a peer of '%s'", hello.rh_from, c->id);
			else if (p->dials)
				reject(pc, TDO_RJ_DIRECTION, "node '%s' is dialled by '%s', not the other way", hello.rh_from, c->id);
			else {
				peer_up(p, pc, hello.rh_boot);
				fill_hello(c, &hello, p->conf.id);
				send_msg(pc, TDO_RM_WELCOME, &hello, sizeof(hello), false);
				announce_up(p);
				return !pc->closing;
			}
			return false;
		}
		if (pc->outbound && h->rm_type == TDO_RM_WELCOME && h->rm_length == sizeof(hello)) {
			memcpy(&hello, pl, sizeof(hello));
			hello.rh_cluster[TDO_CLUSTER_MAX] = hello.rh_from[TDO_NODE_ID_MAX] = hello.rh_to[TDO_NODE_ID_MAX] = 0;
			char why[200];
			if (strcmp(hello.rh_cluster, c->name) || strcmp(hello.rh_from, pc->p->conf.id) ||
			    strcmp(hello.rh_to, c->id)) {
				snprintf(why, sizeof(why), "answered as node '%.31s' of cluster '%.63s'", hello.rh_from,
					 hello.rh_cluster);
				conn_close(pc, why);
				return false;
			}
			peer_up(pc->p, pc, hello.rh_boot);
			announce_up(pc->p);
			return !pc->closing;
		}
		if (pc->outbound && h->rm_type == TDO_RM_REJECT && h->rm_length == sizeof(struct tdo_rm_reject)) {
			struct tdo_rm_reject rj;
			memcpy(&rj, pl, sizeof(rj));
			rj.rj_text[sizeof(rj.rj_text) - 1] = 0;
			char why[200];
			snprintf(why, sizeof(why), "refused us: %s", rj.rj_text);
			tdo_log(TDO_LOG_WARN, "peer", "%s %s", pc->p->conf.id, why);
			conn_close(pc, why);
			return false;
		}
		conn_close(pc, "unexpected message during the handshake");
		return false;
	}
	switch (h->rm_type) {
	case TDO_RM_PING:
		send_msg(pc, TDO_RM_PONG, NULL, 0, false);
		return !pc->closing;
	case TDO_RM_PONG:
		return true;
	default: {
		if (h->rm_type >= TDO_RM_FIRST_VOLUME && h->rm_type < TDO_RM_END && c->hooks.msg) {
			c->hooks.msg(c->hooks.arg, (int)(pc->p - c->peers), h->rm_type, pl, h->rm_length);
			return !pc->closing;
		}
		char why[64];
		snprintf(why, sizeof(why), "unknown message type %u", h->rm_type);
		conn_close(pc, why);
		return false;
	}
	}
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
	(void)hint;
	struct pconn *pc = h->data;
	if (!pc->up) {
		/* one HELLO (or WELCOME, or REJECT) and not a byte more */
		if (!pc->rx) {
			if (!(pc->rx = malloc(PEER_HS_RX))) {
				*b = uv_buf_init(NULL, 0);
				return;
			}
			pc->rx_cap = PEER_HS_RX;
		}
		*b = uv_buf_init(pc->rx + pc->rx_len, (unsigned)(pc->rx_cap - pc->rx_len));
		return;
	}
	if (pc->rx_cap - pc->rx_len < 64 * 1024) {
		size_t cap = pc->rx_cap * 2 > 128 * 1024 ? pc->rx_cap * 2 : 128 * 1024;
		while (cap - pc->rx_len < 64 * 1024)
			cap *= 2;
		char *n = realloc(pc->rx, cap);
		if (!n) {
			*b = uv_buf_init(NULL, 0);   /* libuv reports UV_ENOBUFS */
			return;
		}
		pc->rx = n;
		pc->rx_cap = cap;
	}
	*b = uv_buf_init(pc->rx + pc->rx_len, (unsigned)(pc->rx_cap - pc->rx_len));
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	(void)b;
	struct pconn *pc = s->data;
	if (n < 0) {
		conn_close(pc, n == UV_EOF ? "the peer closed the connection" : uv_strerror((int)n));
		return;
	}
	if (pc->closing)
		return;
	pc->rx_len += (size_t)n;
	pc->last_rx_usec = tdo_now_usec();
	size_t p = 0;
	while (pc->rx_len - p >= sizeof(struct tdo_rmsg)) {
		struct tdo_rmsg h;
		memcpy(&h, pc->rx + p, sizeof(h));
		size_t max = pc->up ? TDO_RM_MAX_PAYLOAD : sizeof(struct tdo_rm_hello);
		if (h.rm_magic != TDO_RM_MAGIC || h.rm_version != TDO_RM_VERSION || h.rm_length > max) {
			conn_close(pc, h.rm_magic != TDO_RM_MAGIC ? "not a Testudo peer (bad magic)" :
				   h.rm_version != TDO_RM_VERSION ? "unsupported peer protocol version" :
				   pc->up ? "message longer than the protocol allows" :
				   "handshake message longer than a HELLO");
			return;
		}
		if (pc->rx_len - p < sizeof(h) + h.rm_length)
			break;
		const char *pl = pc->rx + p + sizeof(h);
		if (h.rm_check != (uint32_t)tdo_csum_two(&h, offsetof(struct tdo_rmsg, rm_check), pl, h.rm_length)) {
			conn_close(pc, "message checksum mismatch");
			return;
		}
		p += sizeof(h) + h.rm_length;
		if (!on_msg(pc, &h, pl))
			return;
	}
	memmove(pc->rx, pc->rx + p, pc->rx_len - p);
	pc->rx_len -= p;
	/* a large message still arriving: make room for all of it at once */
	if (pc->up && pc->rx_len >= sizeof(struct tdo_rmsg)) {
		struct tdo_rmsg h;
		memcpy(&h, pc->rx, sizeof(h));
		size_t need = sizeof(h) + h.rm_length + 64 * 1024;
		if (need > pc->rx_cap) {
			char *nb = realloc(pc->rx, need);
			if (!nb) {
				conn_close(pc, "out of memory for a message");
				return;
			}
			pc->rx = nb;
			pc->rx_cap = need;
		}
	}
}

static struct pconn *pc_new(struct tdo_cluster *c, bool outbound)
{
	struct pconn *pc = calloc(1, sizeof(*pc));
	if (!pc)
		return NULL;
	pc->c = c;
	pc->outbound = outbound;
	pc->born_usec = pc->last_rx_usec = tdo_now_usec();
	uv_tcp_init(c->loop, &pc->tcp);
	pc->tcp.data = pc;
	c->handles++;
	pc->next = c->conns;
	c->conns = pc;
	return pc;
}

static void connect_cb(uv_connect_t *r, int status)
{
	struct pconn *pc = r->data;
	if (pc->closing)
		return;
	if (status < 0) {
		char why[160];
		snprintf(why, sizeof(why), "connect %.64s:%d: %s", pc->p->conf.host, pc->p->conf.port, uv_strerror(status));
		conn_close(pc, why);
		return;
	}
	uv_tcp_nodelay(&pc->tcp, 1);
	uv_read_start((uv_stream_t *)&pc->tcp, alloc_cb, read_cb);
	struct tdo_rm_hello h;
	fill_hello(pc->c, &h, pc->p->conf.id);
	send_msg(pc, TDO_RM_HELLO, &h, sizeof(h), false);
}

static void dial(struct peer *p)
{
	struct tdo_cluster *c = p->c;
	struct pconn *pc = pc_new(c, true);
	if (!pc) {
		schedule_dial(p);
		return;
	}
	pc->p = p;
	p->conn = pc;
	set_state(p, TDO_PEER_CONNECTING);
	struct sockaddr_storage sa;
	if (uv_ip4_addr(p->conf.host, p->conf.port, (struct sockaddr_in *)&sa))
		uv_ip6_addr(p->conf.host, p->conf.port, (struct sockaddr_in6 *)&sa);
	pc->creq.data = pc;
	int rc = uv_tcp_connect(&pc->creq, &pc->tcp, (struct sockaddr *)&sa, connect_cb);
	if (rc < 0)
		conn_close(pc, uv_strerror(rc));
}

/* More than PEER_MAX_HANDSHAKES strangers at once: closed, said at most
 * every PEER_REFUSED_LOG_MS with how many went since the last time. */
static void refuse_handshake(struct pconn *pc)
{
	static uint64_t last_log, quiet;
	uint64_t now = tdo_now_usec();
	conn_close(pc, NULL);
	quiet++;
	if (last_log && now - last_log < PEER_REFUSED_LOG_MS * 1000ull)
		return;
	tdo_log(TDO_LOG_WARN, "peer", "refused %llu connection%s: %d still in their handshake, the most allowed "
		"(PEER_MAX_HANDSHAKES); said at most every %d s", (unsigned long long)quiet, quiet == 1 ? "" : "s",
		PEER_MAX_HANDSHAKES, PEER_REFUSED_LOG_MS / 1000);
	last_log = now;
	quiet = 0;
}

static void on_connection(uv_stream_t *l, int status)
{
	struct tdo_cluster *c = l->data;
	if (status < 0 || c->stopping)
		return;
	int pending = 0;
	for (struct pconn *q = c->conns; q; q = q->next)
		pending += !q->up && !q->outbound && !q->closing;
	struct pconn *pc = pc_new(c, false);
	if (!pc)
		return;
	if (uv_accept(l, (uv_stream_t *)&pc->tcp)) {
		conn_close(pc, NULL);
		return;
	}
	if (pending >= PEER_MAX_HANDSHAKES) {
		refuse_handshake(pc);
		return;
	}
	uv_tcp_nodelay(&pc->tcp, 1);
	uv_read_start((uv_stream_t *)&pc->tcp, alloc_cb, read_cb);
}

static void heartbeat_cb(uv_timer_t *t)
{
	struct tdo_cluster *c = t->data;
	uint64_t now = tdo_now_usec();
	for (struct pconn *pc = c->conns, *next; pc; pc = next) {
		next = pc->next;
		if (pc->closing)
			continue;
		if (pc->overloaded) {
			conn_close(pc, "send queue over PEER_MAX_QUEUED (256 MiB): the peer does not read");
		} else if (pc->up && now - pc->last_rx_usec > (uint64_t)c->dead_ms * 1000) {
			char why[80];
			snprintf(why, sizeof(why), "silent for %llu ms", (unsigned long long)((now - pc->last_rx_usec) / 1000));
			conn_close(pc, why);
		} else if (pc->up) {
			send_msg(pc, TDO_RM_PING, NULL, 0, false);
		} else if (now - pc->born_usec > HANDSHAKE_MS * 1000ull) {
			conn_close(pc, "no handshake");
		}
	}
}

int tdo_cluster_opts_check(const struct tdo_cluster_opts *o, char *err, size_t errlen)
{
	if (!o->cluster || !*o->cluster || strlen(o->cluster) > TDO_CLUSTER_MAX) {
		snprintf(err, errlen, "cluster name must be 1..%d characters", TDO_CLUSTER_MAX);
		return -EINVAL;
	}
	for (const char *q = o->cluster; *q; q++)
		if (*q < 0x21 || *q > 0x7e) {
			snprintf(err, errlen, "cluster name '%s': printable characters only, no spaces", o->cluster);
			return -EINVAL;
		}
	if (!o->node_id || !tdo_node_id_valid(o->node_id)) {
		snprintf(err, errlen, "node id must be 1..%d of A-Z a-z 0-9 . _ -", TDO_NODE_ID_MAX);
		return -EINVAL;
	}
	if (o->npeers > TDO_MAX_PEERS) {
		snprintf(err, errlen, "at most %d peers", TDO_MAX_PEERS);
		return -EINVAL;
	}
	for (int i = 0; i < o->npeers; i++) {
		if (!strcmp(o->peers[i].id, o->node_id)) {
			snprintf(err, errlen, "peer '%s' has this node's own id", o->peers[i].id);
			return -EINVAL;
		}
		for (int k = 0; k < i; k++)
			if (!strcmp(o->peers[i].id, o->peers[k].id)) {
				snprintf(err, errlen, "peer '%s' is named twice", o->peers[i].id);
				return -EINVAL;
			}
	}
	struct sockaddr_in6 a6;
	struct sockaddr_in a4;
	if (!o->host || (uv_ip4_addr(o->host, o->port, &a4) && uv_ip6_addr(o->host, o->port, &a6))) {
		snprintf(err, errlen, "repl address '%s' is not an IP address", o->host ? o->host : "");
		return -EINVAL;
	}
	return 0;
}

int tdo_cluster_start(uv_loop_t *loop, const struct tdo_cluster_opts *o, struct tdo_cluster **out,
		      char *addr, size_t addrlen, char *err, size_t errlen)
{
	int rc = tdo_cluster_opts_check(o, err, errlen);
	if (rc)
		return rc;
	struct tdo_cluster *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->loop = loop;
	snprintf(c->name, sizeof(c->name), "%s", o->cluster);
	snprintf(c->id, sizeof(c->id), "%s", o->node_id);
	if (getrandom(&c->boot, sizeof(c->boot), 0) != sizeof(c->boot))
		c->boot = tdo_now_usec() ^ 0x9e3779b97f4a7c15ull;
	c->heartbeat_ms = o->heartbeat_ms ? o->heartbeat_ms : 200;
	c->dead_ms = o->dead_ms ? o->dead_ms : 1000;

	c->listener.data = c;
	c->handles++;
	if ((rc = tdo_tcp_listen(loop, &c->listener, o->host, o->port, on_connection, addr, addrlen,
				 handle_closed))) {
		/* the listener is closing; its close callback frees C */
		snprintf(err, errlen, "%s", uv_strerror(rc));
		c->stopping = true;
		return rc;
	}
	uv_idle_init(loop, &c->flush);
	c->flush.data = c;
	c->handles++;
	uv_timer_init(loop, &c->hb);
	c->hb.data = c;
	c->handles++;
	uv_timer_start(&c->hb, heartbeat_cb, c->heartbeat_ms, c->heartbeat_ms);
	c->npeers = o->npeers;
	for (int i = 0; i < o->npeers; i++) {
		struct peer *p = &c->peers[i];
		p->c = c;
		p->conf = o->peers[i];
		p->dials = strcmp(c->id, p->conf.id) < 0;
		p->since_usec = tdo_now_usec();
		uv_timer_init(loop, &p->retry);
		p->retry.data = p;
		c->handles++;
		if (p->dials)
			dial(p);
	}
	*out = c;
	return 0;
}

static void retry_closed(uv_handle_t *h)
{
	struct peer *p = h->data;
	if (--p->c->handles == 0)
		free(p->c);
}

void tdo_cluster_stop(struct tdo_cluster *c)
{
	if (!c || c->stopping)
		return;
	c->stopping = true;
	for (struct pconn *pc = c->conns, *next; pc; pc = next) {
		next = pc->next;
		conn_close(pc, NULL);
	}
	for (int i = 0; i < c->npeers; i++)
		uv_close((uv_handle_t *)&c->peers[i].retry, retry_closed);
	uv_close((uv_handle_t *)&c->hb, handle_closed);
	uv_close((uv_handle_t *)&c->flush, handle_closed);
	uv_close((uv_handle_t *)&c->listener, handle_closed);
}

int tdo_cluster_peers(struct tdo_cluster *c, struct tdo_peer_info *out, int max)
{
	for (int i = 0; i < c->npeers && i < max; i++) {
		struct peer *p = &c->peers[i];
		struct tdo_peer_info *o = &out[i];
		memset(o, 0, sizeof(*o));
		snprintf(o->id, sizeof(o->id), "%s", p->conf.id);
		snprintf(o->address, sizeof(o->address), strchr(p->conf.host, ':') ? "[%s]:%d" : "%s:%d",
			 p->conf.host, p->conf.port);
		o->state = p->state;
		o->dials = p->dials;
		o->since_usec = p->since_usec;
		o->connects = p->connects;
		o->drops = p->drops;
		snprintf(o->last_error, sizeof(o->last_error), "%s", p->last_error);
	}
	return c->npeers;
}

const char *tdo_cluster_name(struct tdo_cluster *c)
{
	return c ? c->name : "";
}

const char *tdo_cluster_node_id(struct tdo_cluster *c)
{
	return c->id;
}

void tdo_cluster_set_hooks(struct tdo_cluster *c, const struct tdo_cluster_hooks *h)
{
	if (c)
		c->hooks = *h;
}

int tdo_cluster_send(struct tdo_cluster *c, int peer, uint16_t type, const void *a, uint32_t alen,
		     const void *b, uint32_t blen)
{
	if (!c || peer < 0 || peer >= c->npeers || c->stopping)
		return -EINVAL;
	struct pconn *pc = c->peers[peer].conn;
	if (!pc || !pc->up || pc->closing)
		return -ENOTCONN;
	return send_msg2(pc, type, a, alen, b, blen, false);
}

void tdo_cluster_drop(struct tdo_cluster *c, int peer, const char *why)
{
	if (c && peer >= 0 && peer < c->npeers && c->peers[peer].conn)
		conn_close(c->peers[peer].conn, why);
}

int tdo_cluster_npeers(struct tdo_cluster *c)
{
	return c ? c->npeers : 0;
}

const char *tdo_cluster_peer_id(struct tdo_cluster *c, int peer)
{
	return c && peer >= 0 && peer < c->npeers ? c->peers[peer].conf.id : NULL;
}

int tdo_cluster_peer_index(struct tdo_cluster *c, const char *id)
{
	struct peer *p = c ? find_peer(c, id) : NULL;
	return p ? (int)(p - c->peers) : -1;
}

bool tdo_cluster_peer_up(struct tdo_cluster *c, int peer)
{
	return c && peer >= 0 && peer < c->npeers && c->peers[peer].state == TDO_PEER_UP;
}
