/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The volume tier's cluster membership: a node's persistent connections
 * to its configured peers. Driven by the daemon's libuv loop. The wire
 * format is in testudo/repl.h.
 */
#ifndef TESTUDO_CLUSTER_H
#define TESTUDO_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "testudo/repl.h"

#define TDO_MAX_PEERS 15

struct tdo_cluster;

struct tdo_peer_conf {
	char id[TDO_NODE_ID_MAX + 1];
	char host[256];
	int port;
};

struct tdo_cluster_opts {
	const char *cluster;         /* cluster name, 1..63 printable characters */
	const char *node_id;         /* this node */
	const char *host;            /* where to listen for peers */
	int port;                    /* 0 picks a free port */
	int npeers;
	struct tdo_peer_conf peers[TDO_MAX_PEERS];
	unsigned heartbeat_ms;       /* PING interval (default 200) */
	unsigned dead_ms;            /* silence after which a peer is down (default 1000) */
};

/* A node id: 1..TDO_NODE_ID_MAX of [A-Za-z0-9._-]. True when ID is one
 * (the same convention as tdo_vol_name_valid). */
bool tdo_node_id_valid(const char *id);
/* "ID=HOST:PORT" into P. Returns 0 or -EINVAL. */
int tdo_peer_parse(const char *s, struct tdo_peer_conf *p);

/* Check O without starting anything: 0, or -EINVAL with a reason in ERR. */
int tdo_cluster_opts_check(const struct tdo_cluster_opts *o, char *err, size_t errlen);

/*
 * Listen for peers and start dialling the ones this node dials. Writes
 * the bound "HOST:PORT" into ADDR. Returns 0, -EINVAL for bad options
 * (with a reason in ERR), or a libuv error from the listener.
 */
int tdo_cluster_start(uv_loop_t *loop, const struct tdo_cluster_opts *o, struct tdo_cluster **out,
		      char *addr, size_t addrlen, char *err, size_t errlen);
/* Close every connection and the listener; the memory goes with the
 * last close callback. */
void tdo_cluster_stop(struct tdo_cluster *c);

enum tdo_peer_state { TDO_PEER_DOWN, TDO_PEER_CONNECTING, TDO_PEER_UP };
struct tdo_peer_info {
	char id[TDO_NODE_ID_MAX + 1];
	char address[280];
	enum tdo_peer_state state;
	int dials;                   /* this node dials the peer (else it waits for it) */
	uint64_t since_usec;         /* when the state last changed (monotonic) */
	uint64_t connects, drops;
	char last_error[160];
};
const char *tdo_peer_state_name(enum tdo_peer_state s);
/* Fill up to MAX entries; returns the number of peers. */
int tdo_cluster_peers(struct tdo_cluster *c, struct tdo_peer_info *out, int max);
const char *tdo_cluster_name(struct tdo_cluster *c);

/*
 * The calls below take C == NULL as a node outside any cluster: no peers
 * (npeers 0, no peer is up, sends fail with -EINVAL), name "".
 *
 * The volume tier sits on top: it is told when a peer's connection comes
 * up or goes down, and gets every checked message of a volume-tier type
 * (TDO_RM_FIRST_VOLUME..TDO_RM_END-1) with the peer's index. Messages
 * queued in one loop turn leave in one write per connection.
 */
struct tdo_cluster_hooks {
	void *arg;
	void (*up)(void *arg, int peer);
	void (*down)(void *arg, int peer);
	void (*msg)(void *arg, int peer, uint16_t type, const void *payload, uint32_t len);
};
void tdo_cluster_set_hooks(struct tdo_cluster *c, const struct tdo_cluster_hooks *h);
/* Queue one message whose payload is A then B. -ENOTCONN when the peer
 * is not up. */
int tdo_cluster_send(struct tdo_cluster *c, int peer, uint16_t type, const void *a, uint32_t alen,
		     const void *b, uint32_t blen);
/* Close the connection to PEER (a protocol violation); it is redialled. */
void tdo_cluster_drop(struct tdo_cluster *c, int peer, const char *why);
int tdo_cluster_npeers(struct tdo_cluster *c);
const char *tdo_cluster_peer_id(struct tdo_cluster *c, int peer);
int tdo_cluster_peer_index(struct tdo_cluster *c, const char *id);
bool tdo_cluster_peer_up(struct tdo_cluster *c, int peer);
const char *tdo_cluster_node_id(struct tdo_cluster *c);

#endif
