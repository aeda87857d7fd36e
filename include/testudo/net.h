/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Listening sockets for the daemon's tiers (the NBD and admin listeners,
 * and the peer listener of the volume tier), on its libuv loop. The
 * engine never includes this.
 */
#ifndef TESTUDO_NET_H
#define TESTUDO_NET_H

#include <stddef.h>
#include <uv.h>

/* "HOST:PORT", "[v6]:PORT" or ":PORT" into HOST (default 127.0.0.1) and
 * PORT (0..65535). Returns 0 or -EINVAL. */
int tdo_parse_hostport(const char *s, char *host, size_t hostlen, int *port);

/* Bind and listen on HOST:PORT (an IP address; port 0 picks one); writes
 * the bound "HOST:PORT" into OUT. Returns 0, or a libuv error after
 * closing T with ON_CLOSE (NULL when the caller has nothing to free);
 * only if uv_tcp_init itself fails is T left uninitialised. */
int tdo_tcp_listen(uv_loop_t *loop, uv_tcp_t *t, const char *host, int port,
		   uv_connection_cb cb, char *out, size_t outlen, uv_close_cb on_close);

#endif
