/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: testudod, the node daemon: one libuv loop, one engine, the
 * volume tier on top of it, an NBD listener and an admin listener, and
 * with --node-id the peer listener and connections of its cluster.
 * Without --node-id the node is a cluster of one (no peers, no state
 * file); the access tier works the same either way, through the volume
 * tier. Settings come from an INI file and from flags (flags win). As
 * soon as a listener accepts it prints "listening nbd HOST:PORT" /
 * "listening admin HOST:PORT" (and "listening repl HOST:PORT") on
 * standard output, so scripts can use port 0. The SIGBUS handler that
 * lets the engine read through a mapping is installed here, by the
 * program, not by the library.
 *
 * SIGTERM/SIGINT stop it gracefully: listeners close, no new requests are
 * read, in-flight requests complete and are answered, the volume tier
 * stops waiting on peers, then the engine writes its final checkpoint
 * and the process exits 0.
 *
 * Must never: exit with an acknowledged write not durable (the volume
 * tier's completion means durable on every in-sync copy), or crash on a
 * bad device, config or flag.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sys/stat.h>

#include "internal.h"
#include "admin.h"
#include "testudo/vtier.h"

struct settings {
	char device[4096];
	char nbd[256];
	char admin[256];
	int verbose;
	/* the cluster: none unless node_id is set */
	char node_id[TDO_NODE_ID_MAX + 1];
	char cluster[TDO_CLUSTER_MAX + 1];
	char repl[256];
	int npeers;
	struct tdo_peer_conf peers[TDO_MAX_PEERS];
	char state[4096];           /* the node's state file (default DEVICE.state) */
	unsigned ack_timeout_ms;
	uint64_t resync_rate;
};

static struct daemon D;
static uv_signal_t sig_term, sig_int;
/* in-flight requests get this long to finish after SIGTERM; then those
 * still waiting on other nodes fail and every connection is closed */
#define DRAIN_MS 5000
static uv_timer_t drain_timer;
static int exit_status;

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: testudod --device PATH [--nbd HOST:PORT] [--admin HOST:PORT] [--config FILE] [-v]\n"
	        "                [--node-id ID --repl HOST:PORT [--peer ID=HOST:PORT]... [--cluster NAME]]\n"
	        "  --device PATH        the Testudo device to serve (testudo format PATH first)\n"
	        "  --nbd HOST:PORT      NBD listener (default 127.0.0.1:10809; port 0 picks one)\n"
	        "  --admin HOST:PORT    admin HTTP listener (default 127.0.0.1:10810)\n"
	        "  --node-id ID         this node's id in its cluster (A-Z a-z 0-9 . _ -, up to 31)\n"
	        "  --repl HOST:PORT     listener for peer nodes (default 127.0.0.1:10811 with --node-id)\n"
	        "  --peer ID=HOST:PORT  a peer node and its repl address; repeat for each peer\n"
	        "  --cluster NAME       cluster name, the same on every node (default testudo)\n"
	        "  --state FILE         the node's cluster state file (default DEVICE.state)\n"
	        "  --ack-timeout MS     a replica silent this long on a write is out of date (default 1000)\n"
	        "  --resync-rate SIZE   bytes per second a resync may copy (default 256M)\n"
	        "  --config FILE        INI file with the same keys: device, nbd, admin, verbose,\n"
	        "                       node_id, repl, cluster, state, ack_timeout, resync_rate, and one\n"
	        "                       'peer = ID=HOST:PORT' line per peer\n"
	        "  -v                   debug logging, including every NBD option and request\n");
}

static char *trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
		*--e = 0;
	return s;
}

/* 10..600000 milliseconds */
static int parse_ms(const char *v, unsigned *out)
{
	char *end;
	errno = 0;
	unsigned long n = strtoul(v, &end, 10);
	if (errno || end == v || *end || n < 10 || n > 600000 || *v == '-')
		return -1;
	*out = (unsigned)n;
	return 0;
}

/* a size per second, at least 1M */
static int parse_rate(const char *v, uint64_t *out)
{
	uint64_t n;
	if (tdo_parse_size(v, &n) || n < (1u << 20))
		return -1;
	*out = n;
	return 0;
}

/* The string settings given as flags replace the config file's. */
static void flags_win(struct settings *st, const struct settings *cli)
{
	static const size_t strs[] = {
		offsetof(struct settings, device), offsetof(struct settings, nbd), offsetof(struct settings, admin),
		offsetof(struct settings, node_id), offsetof(struct settings, cluster), offsetof(struct settings, repl),
		offsetof(struct settings, state),
	};

	/* each was bounded by its own field when parsed, and is copied into
	 * the same field */
	for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
		if (((const char *)cli)[strs[i]])
			strcpy((char *)st + strs[i], (const char *)cli + strs[i]);
}

/* INI: key = value lines, '#' or ';' comments, an optional [testudod] section. */
static int read_config(const char *path, struct settings *st)
{
	FILE *f = fopen(path, "r");
	char line[4200];
	int lineno = 0;

	if (!f) {
		fprintf(stderr, "testudod: config %s: %s\n", path, strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof line, f)) {
		char *l = trim(line), *eq, *k, *v;
		lineno++;
		if (!*l || *l == '#' || *l == ';')
			continue;
		if (*l == '[') {
			if (strcmp(l, "[testudod]") != 0) {
				fprintf(stderr, "testudod: config %s:%d: unknown section %s\n", path, lineno, l);
				fclose(f);
				return -1;
			}
			continue;
		}
		eq = strchr(l, '=');
		if (!eq) {
			fprintf(stderr, "testudod: config %s:%d: expected key = value\n", path, lineno);
			fclose(f);
			return -1;
		}
		*eq = 0;
		k = trim(l);
		v = trim(eq + 1);
		if (!strcmp(k, "device") && strlen(v) < sizeof st->device)
			strcpy(st->device, v);
		else if (!strcmp(k, "nbd") && strlen(v) < sizeof st->nbd)
			strcpy(st->nbd, v);
		else if (!strcmp(k, "admin") && strlen(v) < sizeof st->admin)
			strcpy(st->admin, v);
		else if (!strcmp(k, "verbose") && (!strcmp(v, "0") || !strcmp(v, "1") || !strcmp(v, "2")))
			st->verbose = atoi(v);
		else if (!strcmp(k, "node_id") && tdo_node_id_valid(v))
			strcpy(st->node_id, v);
		else if (!strcmp(k, "cluster") && strlen(v) < sizeof st->cluster)
			strcpy(st->cluster, v);
		else if (!strcmp(k, "repl") && strlen(v) < sizeof st->repl)
			strcpy(st->repl, v);
		else if (!strcmp(k, "peer") && st->npeers < TDO_MAX_PEERS && !tdo_peer_parse(v, &st->peers[st->npeers]))
			st->npeers++;
		else if (!strcmp(k, "state") && *v && strlen(v) < sizeof st->state)
			strcpy(st->state, v);
		else if (!strcmp(k, "ack_timeout") && parse_ms(v, &st->ack_timeout_ms) == 0)
			;
		else if (!strcmp(k, "resync_rate") && parse_rate(v, &st->resync_rate) == 0)
			;
		else {
			fprintf(stderr, "testudod: config %s:%d: unknown key or bad value '%s'\n", path, lineno, k);
			fclose(f);
			return -1;
		}
	}
	fclose(f);
	return 0;
}

static void handles_closed(uv_handle_t *h)
{
	(void)h;
}

static void engine_closed(void *arg, int status)
{
	(void)arg;
	if (status) {
		tdo_log(TDO_LOG_ERROR, "testudod", "closing the device: %s", tdo_strerror(status));
		exit_status = 1;
	} else {
		tdo_log(TDO_LOG_INFO, "testudod", "device closed cleanly");
	}
	D.engine = NULL;
	tdo_vtier_free(D.vtier);
	D.vtier = NULL;
	if (sig_term.loop && !uv_is_closing((uv_handle_t *)&sig_term))
		uv_close((uv_handle_t *)&sig_term, handles_closed);
	if (sig_int.loop && !uv_is_closing((uv_handle_t *)&sig_int))
		uv_close((uv_handle_t *)&sig_int, handles_closed);
	if (drain_timer.loop && !uv_is_closing((uv_handle_t *)&drain_timer))
		uv_close((uv_handle_t *)&drain_timer, handles_closed);
}

void daemon_conns_drained(struct daemon *d)
{
	if (!d->engine || !d->stopping)
		return;
	tdo_vtier_stop(d->vtier);
	tdo_cluster_stop(d->cluster);
	if (tdo_engine_close(d->engine, engine_closed, NULL) == -EALREADY)
		return;
}

/* The volume tier deleted a volume: its clients here are cut off. */
static void vol_gone(void *arg, const char *name)
{
	struct daemon *d = arg;
	if (nbd_conn_count(d, name) > 0)
		nbd_conn_close_volume(d, name, "volume deleted");
	met_forget(&d->met, name);
}

/* The drain took too long: a write may wait for replicas or a majority
 * that is gone, or a client may not read its replies. */
static void on_drain_timeout(uv_timer_t *t)
{
	(void)t;
	if (tdo_list_empty(&D.conns))
		return;
	tdo_log(TDO_LOG_WARN, "testudod", "requests still in flight %d s after the stop began: failing those that "
	        "wait on other nodes, closing every connection", DRAIN_MS / 1000);
	tdo_vtier_stop(D.vtier);
	nbd_abort(&D);
}

static void on_signal(uv_signal_t *s, int signum)
{
	(void)s;
	if (D.stopping) {
		tdo_log(TDO_LOG_WARN, "testudod", "signal %d again: still finishing in-flight requests", signum);
		return;
	}
	tdo_log(TDO_LOG_INFO, "testudod", "signal %d: stopping (in-flight requests complete first)", signum);
	D.stopping = true;
	nbd_shutdown(&D);
	http_shutdown(&D);
	uv_timer_init(D.loop, &drain_timer);
	uv_timer_start(&drain_timer, on_drain_timeout, DRAIN_MS, 0);
	/* the cluster stays up while clients drain: their writes wait on replicas */
	if (tdo_list_empty(&D.conns))
		daemon_conns_drained(&D);
}

static void close_any(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

/* Listen for WHAT on HOSTPORT with LISTEN, which fills ADDR; say where on
 * standard output ("listening TAG HOST:PORT"), or why not on standard
 * error. 0 or -1. */
static int listen_on(struct daemon *d, const char *what, const char *tag, const char *hostport,
                     int (*listen)(struct daemon *d, const char *host, int port), const char *addr)
{
	char host[256];
	int port, err = 0;

	if (tdo_parse_hostport(hostport, host, sizeof host, &port) || (err = listen(d, host, port))) {
		fprintf(stderr, "testudod: cannot listen for %s on %s: %s\n", what, hostport,
		        err ? uv_strerror(err) : "expected HOST:PORT");
		return -1;
	}
	printf("listening %s %s\n", tag, addr);
	fflush(stdout);
	return 0;
}

/* Leave after a start-up failure: release the device and the loop. */
static int bail(uv_loop_t *loop, int code)
{
	/* listeners already up would keep the loop running */
	tdo_vtier_stop(D.vtier);
	tdo_cluster_stop(D.cluster);
	if (D.nbd_listener.loop)
		nbd_shutdown(&D);
	http_shutdown(&D);
	if (D.engine) {
		D.stopping = true;
		tdo_engine_close(D.engine, engine_closed, NULL);
		uv_run(loop, UV_RUN_DEFAULT);
	}
	uv_walk(loop, close_any, NULL);
	uv_run(loop, UV_RUN_DEFAULT);
	uv_loop_close(loop);
	return code;
}

int main(int argc, char **argv)
{
	struct settings st = { .nbd = "127.0.0.1:10809", .admin = "127.0.0.1:10810" };
	struct settings cli = { 0 };
	const char *config = NULL;
	int err;
	uv_loop_t loop;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(a, "-v")) {
			cli.verbose++;
		} else if (!strcmp(a, "-vv")) {
			cli.verbose += 2;
		} else if (i + 1 < argc && !strcmp(a, "--peer")) {
			const char *v = argv[++i];
			if (cli.npeers == TDO_MAX_PEERS || tdo_peer_parse(v, &cli.peers[cli.npeers])) {
				fprintf(stderr, "testudod: --peer '%s': expected ID=IP:PORT (at most %d peers)\n", v,
				        TDO_MAX_PEERS);
				return 2;
			}
			cli.npeers++;
		} else if (i + 1 < argc && !strcmp(a, "--state")) {
			const char *v = argv[++i];
			if (!*v || strlen(v) >= sizeof cli.state) {
				fprintf(stderr, "testudod: --state: a file path\n");
				return 2;
			}
			strcpy(cli.state, v);
		} else if (i + 1 < argc && !strcmp(a, "--ack-timeout")) {
			if (parse_ms(argv[++i], &cli.ack_timeout_ms)) {
				fprintf(stderr, "testudod: --ack-timeout '%s': milliseconds, 10 to 600000\n", argv[i]);
				return 2;
			}
		} else if (i + 1 < argc && !strcmp(a, "--resync-rate")) {
			if (parse_rate(argv[++i], &cli.resync_rate)) {
				fprintf(stderr, "testudod: --resync-rate '%s': bytes per second (K/M/G), at least 1M\n", argv[i]);
				return 2;
			}
		} else if (i + 1 < argc && (!strcmp(a, "--node-id") || !strcmp(a, "--cluster") || !strcmp(a, "--repl"))) {
			const char *v = argv[++i];
			char *dst = !strcmp(a, "--node-id") ? cli.node_id : !strcmp(a, "--cluster") ? cli.cluster : cli.repl;
			size_t cap = !strcmp(a, "--node-id") ? sizeof cli.node_id : !strcmp(a, "--cluster") ? sizeof cli.cluster
			             : sizeof cli.repl;
			if (strlen(v) >= cap || (dst == cli.node_id && !tdo_node_id_valid(v))) {
				fprintf(stderr, "testudod: %s '%s': %s\n", a, v, dst == cli.node_id ?
				        "1..31 of A-Z a-z 0-9 . _ -" : "value too long");
				return 2;
			}
			strcpy(dst, v);
		} else if (i + 1 < argc && (!strcmp(a, "--device") || !strcmp(a, "--nbd") ||
		                            !strcmp(a, "--admin") || !strcmp(a, "--config"))) {
			const char *v = argv[++i];
			char *dst = !strcmp(a, "--device") ? cli.device : !strcmp(a, "--nbd") ? cli.nbd
			            : !strcmp(a, "--admin") ? cli.admin : NULL;
			if (!dst) {
				config = v;
				continue;
			}
			if (strlen(v) >= sizeof cli.nbd && dst != cli.device) {
				fprintf(stderr, "testudod: %s: value too long\n", a);
				return 2;
			}
			snprintf(dst, dst == cli.device ? sizeof cli.device : sizeof cli.nbd, "%s", v);
		} else {
			fprintf(stderr, "testudod: unknown or incomplete argument '%s' (see --help)\n", a);
			return 2;
		}
	}
	if (config && read_config(config, &st))
		return 2;
	flags_win(&st, &cli);
	if (cli.verbose)
		st.verbose = cli.verbose;
	if (cli.npeers) {
		st.npeers = cli.npeers;
		memcpy(st.peers, cli.peers, sizeof st.peers);
	}
	if (cli.ack_timeout_ms)
		st.ack_timeout_ms = cli.ack_timeout_ms;
	if (cli.resync_rate)
		st.resync_rate = cli.resync_rate;
	if (!st.node_id[0] && (st.npeers || st.repl[0] || st.cluster[0] || st.state[0] || st.ack_timeout_ms ||
	                       st.resync_rate)) {
		fprintf(stderr, "testudod: --peer, --repl, --cluster, --state, --ack-timeout and --resync-rate need --node-id\n");
		return 2;
	}
	/* one event per line at INFO by default; -v adds every NBD request */
	tdo_log_set_level(st.verbose >= 1 ? TDO_LOG_DEBUG : TDO_LOG_INFO);
	if (!st.device[0]) {
		fprintf(stderr, "testudod: no device given (--device PATH or device = PATH in the config)\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	/* cluster settings are checked before the device is touched */
	struct tdo_cluster_opts co = { .cluster = st.cluster[0] ? st.cluster : "testudo",
	                               .node_id = st.node_id, .npeers = st.npeers };
	char repl_host[256], why[256] = "";
	memcpy(co.peers, st.peers, sizeof co.peers);
	if (st.node_id[0]) {
		if (tdo_parse_hostport(st.repl[0] ? st.repl : "127.0.0.1:10811", repl_host, sizeof repl_host, &co.port)) {
			fprintf(stderr, "testudod: --repl %s: expected HOST:PORT\n", st.repl);
			return 2;
		}
		co.host = repl_host;
		if (tdo_cluster_opts_check(&co, why, sizeof why)) {
			fprintf(stderr, "testudod: cluster settings: %s\n", why);
			return 2;
		}
		if (!st.state[0]) {
			struct stat sb;
			if (!stat(st.device, &sb) && S_ISBLK(sb.st_mode)) {
				fprintf(stderr, "testudod: %s is a block device: give the state file with --state FILE\n",
				        st.device);
				return 2;
			}
			if (snprintf(st.state, sizeof st.state, "%s.state", st.device) >= (int)sizeof st.state) {
				fprintf(stderr, "testudod: device path too long for a state file beside it\n");
				return 2;
			}
		}
	} else {
		/* a cluster node's device served alone: changes made now would be
		 * undone by the state file when the node rejoins (a deleted volume
		 * back, a resize reverted) */
		char state[4200];
		struct stat sb;
		snprintf(state, sizeof state, "%s.state", st.device);
		if (!stat(state, &sb)) {
			fprintf(stderr, "testudod: %s holds the cluster configuration of this device's node: start it with "
			        "its --node-id (and --repl, --peer), or move that file away to serve the device alone\n",
			        state);
			return 2;
		}
	}

	uv_loop_init(&loop);
	D.loop = &loop;
	tdo_list_init(&D.conns);
	D.device = st.device;
	D.started_usec = tdo_now_usec();
	tdo_engine_sigbus_install(); /* mapped reads; without it the engine uses pread */
	err = tdo_engine_open(&loop, st.device, NULL, &D.engine);
	if (err) {
		fprintf(stderr, "testudod: %s: %s\n", st.device,
		        err == -ENOENT ? "no such file or device" : tdo_strerror(err));
		return bail(&loop, 1);
	}
	/* the volume tier before the listeners: NBD handshakes open volumes
	 * through it. Without --node-id the node is a cluster of one: no
	 * peers, no state file, its engine's volumes its own. */
	if (st.node_id[0] &&
	    (err = tdo_cluster_start(&loop, &co, &D.cluster, D.repl_addr, sizeof D.repl_addr, why, sizeof why))) {
		fprintf(stderr, "testudod: %s: %s\n", err == -EINVAL ? "cluster settings" : "cannot listen for peers", why);
		return bail(&loop, err == -EINVAL ? 2 : 1);
	}
	struct tdo_vtier_opts vo = { .state_path = st.node_id[0] ? st.state : NULL,
	                             .ack_timeout_ms = st.ack_timeout_ms, .resync_rate = st.resync_rate,
	                             .vol_gone = vol_gone, .arg = &D };
	if ((err = tdo_vtier_start(&loop, D.engine, D.cluster, &vo, &D.vtier, why, sizeof why))) {
		fprintf(stderr, "testudod: %s\n", why);
		return bail(&loop, 1);
	}
	if (st.node_id[0])
		tdo_log(TDO_LOG_INFO, "testudod", "node %s of cluster %s, %d peer%s, peers on %s, state in %s", st.node_id,
		        co.cluster, st.npeers, st.npeers == 1 ? "" : "s", D.repl_addr, st.state);
	if (listen_on(&D, "NBD", "nbd", st.nbd, nbd_listen, D.nbd_addr) ||
	    listen_on(&D, "admin", "admin", st.admin, http_listen, D.admin_addr))
		return bail(&loop, 1);
	if (D.repl_addr[0]) {
		printf("listening repl %s\n", D.repl_addr);
		fflush(stdout);
	}
	tdo_log(TDO_LOG_INFO, "testudod", "serving %s: nbd %s, admin %s", st.device, D.nbd_addr, D.admin_addr);

	uv_signal_init(&loop, &sig_term);
	uv_signal_init(&loop, &sig_int);
	uv_signal_start(&sig_term, on_signal, SIGTERM);
	uv_signal_start(&sig_int, on_signal, SIGINT);

	uv_run(&loop, UV_RUN_DEFAULT);
	/* everything closed: let the close callbacks run, then leave */
	uv_run(&loop, UV_RUN_NOWAIT);
	if (uv_loop_close(&loop) == UV_EBUSY)
		tdo_log(TDO_LOG_DEBUG, "testudod", "loop still had handles at exit");
	return exit_status;
}
