/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The NBD front end's internals: one struct per connection, an ordered
 * state machine fed by the bytes libuv reads. nbd_conn.c owns the
 * connection (accept, buffers, writes, close), nbd_handshake.c the option
 * haggling, nbd_transmission.c the requests, nbd_validate.c the one check
 * every request passes first.
 */
#ifndef TESTUDO_SERVER_NBD_INTERNAL_H
#define TESTUDO_SERVER_NBD_INTERNAL_H

#include "internal.h"

#define NBD_MAX_OPTIONS   256     /* options per connection before we hang up */
#define NBD_MAX_INFLIGHT  256     /* requests in flight before we stop reading */
#define NBD_MAX_QUEUED    (64u << 20) /* reply bytes queued before we stop reading */
/*
 * Request bytes one connection may hold: read buffers from submit until
 * their reply is written (a client that reads no reply keeps them), write
 * payloads from their header until the volume tier is done with them. A
 * request that would pass the budget waits, and the socket is not read,
 * until enough of them finish; one request alone is always admitted (NBD
 * allows 32 MiB, NBD_MAX_PAYLOAD). 256 pipelined 32 MiB reads would hold
 * 8 GiB without it.
 */
#define NBD_MAX_HELD      (64u << 20)
/* NBD connections open at once; one more is accepted and closed at once,
 * logged at most every NBD_REFUSED_LOG_MS with how many were refused */
#define NBD_MAX_CONNS     1024
#define NBD_REFUSED_LOG_MS 10000
/* From accept to the end of option haggling (GO or EXPORT_NAME): a
 * connection still haggling after this is closed */
#define NBD_HANDSHAKE_MS  10000

/*
 * What a request is checked against (nbd_validate): the export as the
 * client was told of it and what the handshake negotiated. Written by
 * nbd_handshake.c only; read by nbd_transmission.c.
 */
struct nbd_terms {
	uint64_t size;              /* the export's size in bytes */
	uint16_t tflags;            /* transmission flags sent (NBD_FLAG_*) */
	bool structured;            /* NBD_OPT_STRUCTURED_REPLY negotiated */
	bool meta_base;             /* base:allocation selected */
};

enum conn_state {
	CS_CLIENT_FLAGS,            /* want the client's 4 flag bytes */
	CS_OPT_HEADER,              /* want a whole option: header and data */
	CS_REQ_HEADER,              /* want a 28-byte request */
	CS_REQ_PAYLOAD,             /* want the rest of a write's payload */
	CS_REQ_DRAIN,               /* discarding a rejected write's payload */
	CS_CLOSING,                 /* nothing more is read */
};

struct nbd_conn {
	struct tdo_list link;       /* d->conns, until the close callback */
	struct daemon *d;
	uv_tcp_t tcp;
	uv_timer_t hs_timer;        /* NBD_HANDSHAKE_MS from accept; closed after tcp, frees c */
	uint64_t id;
	char peer[64];
	int state;                  /* enum conn_state */

	/* bytes read and not yet parsed */
	uint8_t *in;
	size_t in_len, in_cap;
	bool reading;
	bool parsing;               /* inside parse(): no nested parse */

	/* handshake */
	bool no_zeroes;
	uint32_t opt;               /* option being answered */
	uint32_t nopts;

	/* the export, once chosen */
	char name[TDO_NAME_MAX + 1];
	struct tdo_vhandle *vh;     /* the volume tier's handle; owned, closed in on_closed */
	struct nbd_terms terms;     /* size and flags; structured replies, meta context */
	struct met_vol *met;

	/* transmission */
	struct nbd_request req;     /* current request, host byte order */
	uint8_t *payload;           /* write payload being filled */
	uint32_t payload_got;
	uint64_t drain_left;
	uint32_t drain_err;         /* reply for the drained write */
	int inflight;               /* requests handed to the engine */
	uint64_t held;              /* request bytes held, at most NBD_MAX_HELD (or one request) */
	bool held_wait;             /* a request header waits in c->in for the budget */
	/* failed requests logged: at most NBD_ERR_LOG_MAX a second, the rest counted */
	uint64_t err_window;        /* when the current second began, us */
	uint32_t err_logged, err_quiet;
	bool disc;                  /* NBD_CMD_DISC seen or shutting down */
	bool closing;
	bool graceful;              /* flush queued replies before closing */
	bool shutting_down;         /* uv_shutdown under way */
	uint64_t requests;
};

/* nbd_conn.c */
/* Queue a write of N buffers; FREE_ME and FREE_ME2 (may be NULL) are
 * freed once it is written (the caller hands them over). */
void nbd_conn_send(struct nbd_conn *c, uv_buf_t *bufs, unsigned n, void *free_me, void *free_me2);
/* The same, and HELD bytes of c->held are given back once it is written. */
void nbd_conn_send_held(struct nbd_conn *c, uv_buf_t *bufs, unsigned n, void *free_me, void *free_me2,
                        uint32_t held);
/* Give back HELD bytes of c->held (a request finished with its buffer). */
void nbd_conn_release(struct nbd_conn *c, uint32_t held);
/* Stop reading and close once nothing is in flight (WHY is logged); the
 * connection is freed in the close callback, never here. */
void nbd_conn_close(struct nbd_conn *c, const char *why);
/* Called when a request finished: resume reading, close if due. */
void nbd_conn_request_done(struct nbd_conn *c);

/* nbd_handshake.c */
void hs_start(struct nbd_conn *c);
/* Parse what the handshake wants from c->in; returns bytes consumed, 0 when
 * more are needed, -1 when the connection was closed. */
ssize_t hs_consume(struct nbd_conn *c, const uint8_t *p, size_t n);

/* nbd_transmission.c */
ssize_t tx_consume(struct nbd_conn *c, const uint8_t *p, size_t n);
/* A write's payload is complete in c->payload: hand it to the engine.
 * 0, or -1 when the connection was closed. */
int tx_payload_done(struct nbd_conn *c);
/* Log how many failed requests went unlogged one by one. */
void tx_log_quiet_errors(struct nbd_conn *c);
/* The engine error or cause mapped to the NBD error code; the one place. */
uint32_t nbd_errno(int err);

/* nbd_validate.c */
/* The one validator before the volume tier: RQ (host byte order, any
 * command but NBD_CMD_DISC, which has no reply) against T. 0, or the NBD
 * error to answer with; sets *CLOSE when the request cannot be answered
 * in step (a write whose payload is longer than NBD_MAX_PAYLOAD). A
 * rejected write's payload must still be read and dropped. */
uint32_t nbd_validate(const struct nbd_terms *t, const struct nbd_request *rq, bool *close);

#endif
