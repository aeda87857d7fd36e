/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Listening sockets shared by the daemon's tiers: HOST:PORT parsing and
 * bind + listen + the bound address, so the NBD, admin and peer listeners
 * report themselves the same way (include/testudo/net.h).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testudo/net.h"

int tdo_parse_hostport(const char *s, char *host, size_t hostlen, int *port)
{
	const char *colon;
	char *end;
	long p;

	if (s[0] == '[') {
		const char *rb = strchr(s, ']');
		if (!rb || rb[1] != ':' || (size_t)(rb - s - 1) >= hostlen)
			return -EINVAL;
		memcpy(host, s + 1, (size_t)(rb - s - 1));
		host[rb - s - 1] = 0;
		colon = rb + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon || (size_t)(colon - s) >= hostlen)
			return -EINVAL;
		memcpy(host, s, (size_t)(colon - s));
		host[colon - s] = 0;
		if (!host[0])
			snprintf(host, hostlen, "127.0.0.1");
	}
	errno = 0;
	p = strtol(colon + 1, &end, 10);
	if (errno || *end || end == colon + 1 || p < 0 || p > 65535)
		return -EINVAL;
	*port = (int)p;
	return 0;
}

int tdo_tcp_listen(uv_loop_t *loop, uv_tcp_t *t, const char *host, int port,
                   uv_connection_cb cb, char *out, size_t outlen, uv_close_cb on_close)
{
	struct sockaddr_storage sa;
	int salen = sizeof sa, err;
	char name[INET6_ADDRSTRLEN];

	if ((err = uv_tcp_init(loop, t)))
		return err;
	if (strchr(host, ':'))
		err = uv_ip6_addr(host, port, (struct sockaddr_in6 *)&sa);
	else
		err = uv_ip4_addr(host, port, (struct sockaddr_in *)&sa);
	if (err || (err = uv_tcp_bind(t, (struct sockaddr *)&sa, 0)) || (err = uv_listen((uv_stream_t *)t, 128, cb))) {
		uv_close((uv_handle_t *)t, on_close);
		return err;
	}
	uv_tcp_getsockname(t, (struct sockaddr *)&sa, &salen);
	if (sa.ss_family == AF_INET6) {
		uv_ip6_name((struct sockaddr_in6 *)&sa, name, sizeof name);
		snprintf(out, outlen, "[%s]:%d", name, ntohs(((struct sockaddr_in6 *)&sa)->sin6_port));
	} else {
		uv_ip4_name((struct sockaddr_in *)&sa, name, sizeof name);
		snprintf(out, outlen, "%s:%d", name, ntohs(((struct sockaddr_in *)&sa)->sin_port));
	}
	return 0;
}
