/* SPDX-License-Identifier: Apache-2.0 */
/*
 * testudo-bench: an NBD load generator and a witness that no
 * acknowledged write was lost. Command line, then tb_run(), then the
 * report. Exit status: 0 clean; 1 the witness found lost or damaged
 * blocks; 2 usage, or the run could not (re)connect; 3 the server
 * answered requests with errors.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "testudo/util.h"

static void usage(FILE *f)
{
	fputs(
"usage: testudo-bench URI [URI...] [options]\n"
"       testudo-bench verify URI [URI...] --journal JOURNAL [--qd N] [--conns N] [--json]\n"
"\n"
"URI: nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH. Several URIs\n"
"name the nodes of one cluster serving the same volume; a reconnect tries them in turn.\n"
"\n"
"  --rw read|write|randread|randwrite|randrw   workload (default randread)\n"
"  --mix PCT_READ        randrw: share of reads in percent (default 50)\n"
"  --bs SIZE|DIST        block size (default 4k), or a distribution: 4k:70,64k:30\n"
"  --qd N                requests in flight per connection (default 1)\n"
"  --conns N             connections (default 1)\n"
"  --time SECONDS        run time (default 10 when no --ops or --bytes)\n"
"  --ops N, --bytes SIZE stop after this many operations or bytes\n"
"  --range OFFSET:LENGTH part of the export to use (default: all of it)\n"
"  --rate IOPS           issue at most this many operations per second\n"
"  --fua                 writes with NBD_CMD_FLAG_FUA\n"
"  --flush-every N       after every N writes a connection drains and sends a FLUSH (fio's --fsync)\n"
"  --seed N              offsets and sizes are reproducible for one seed\n"
"  --reconnect SECONDS   when a connection drops, keep trying (URIs in turn) this long\n"
"  --pause-ms MS         a gap between completions longer than this is a pause (default 100)\n"
"  --verify JOURNAL      stamp every written block, check every read, journal acknowledged writes\n"
"  --connect-timeout MS  per handshake step (default 5000)\n"
"  --io-timeout SECONDS  a request unanswered this long drops its connection (default 30)\n"
"  --json                the report as JSON on standard output\n"
"  --progress, --quiet   a progress line every second (default: on a terminal)\n"
"\n"
"Exit status: 0 clean, 1 lost or damaged blocks found, 2 usage or connection failure,\n"
"3 the server answered requests with errors.\n", f);
}

static int bad(const char *what, const char *val)
{
	fprintf(stderr, "testudo-bench: bad %s '%s' (try --help)\n", what, val);
	return 2;
}

static int parse_u64(const char *s, uint64_t *v)
{
	char *end;
	errno = 0;
	if (!*s || *s == '-')
		return -1;
	unsigned long long x = strtoull(s, &end, 10);
	if (errno || *end)
		return -1;
	*v = x;
	return 0;
}

static int parse_double(const char *s, double *v)
{
	char *end;
	errno = 0;
	double x = strtod(s, &end);
	if (errno || *end || end == s || !(x >= 0) || x > 1e9)
		return -1;
	*v = x;
	return 0;
}

static int parse_bs(struct tb_opts *o, const char *s)
{
	char tmp[512];
	if (strlen(s) >= sizeof(tmp))
		return -1;
	strcpy(tmp, s);
	o->nbs = 0;
	for (char *save = NULL, *tok = strtok_r(tmp, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (o->nbs == TB_MAX_BS_DIST)
			return -1;
		char *colon = strchr(tok, ':');
		uint64_t w = 1, sz;
		if (colon) {
			*colon = '\0';
			if (parse_u64(colon + 1, &w) || w == 0 || w > 1000000)
				return -1;
		}
		if (tdo_parse_size(tok, &sz) || sz == 0 || sz % 512 || sz > TB_MAX_BS)
			return -1;
		o->bs[o->nbs] = (uint32_t)sz;
		o->bs_weight[o->nbs++] = (uint32_t)w;
	}
	return o->nbs ? 0 : -1;
}

static uint64_t random_u64(void)
{
	uint64_t v = 0;
	if (getrandom(&v, sizeof(v), 0) != sizeof(v)) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		v = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid() << 32 ^ (uint64_t)ts.tv_sec;
	}
	return v ? v : 1;
}

int main(int argc, char **argv)
{
	static struct tb_opts o = {
		.rw = TB_RANDREAD, .mix_read_pct = 50, .qd = 1, .conns = 1, .pause_ms = 100,
		.connect_timeout_ms = 5000, .io_timeout_s = 30,
	};
	/* a server that closes while we write must not kill the witness */
	signal(SIGPIPE, SIG_IGN);
	bool verify_cmd = argc > 1 && !strcmp(argv[1], "verify");
	const char *journal = NULL;
	if (verify_cmd) {
		argv++;
		argc--;
	}
	o.bs[0] = 4096;
	o.bs_weight[0] = 1;
	o.nbs = 1;
	bool seed_given = false, progress = false, quiet = false;
	enum { O_RW = 256, O_MIX, O_BS, O_QD, O_CONNS, O_TIME, O_OPS, O_BYTES, O_RANGE, O_RATE, O_FUA,
	       O_FLUSH, O_SEED, O_RECONNECT, O_PAUSE, O_VERIFY, O_JSON, O_PROGRESS, O_QUIET, O_CTO,
	       O_JOURNAL, O_HELP, O_IOTO };
	static const struct option lo[] = {
		{ "rw", 1, 0, O_RW }, { "mix", 1, 0, O_MIX }, { "bs", 1, 0, O_BS }, { "qd", 1, 0, O_QD },
		{ "conns", 1, 0, O_CONNS }, { "time", 1, 0, O_TIME }, { "ops", 1, 0, O_OPS },
		{ "bytes", 1, 0, O_BYTES }, { "range", 1, 0, O_RANGE }, { "rate", 1, 0, O_RATE },
		{ "fua", 0, 0, O_FUA }, { "flush-every", 1, 0, O_FLUSH }, { "seed", 1, 0, O_SEED },
		{ "reconnect", 1, 0, O_RECONNECT }, { "pause-ms", 1, 0, O_PAUSE }, { "verify", 1, 0, O_VERIFY },
		{ "json", 0, 0, O_JSON }, { "progress", 0, 0, O_PROGRESS }, { "quiet", 0, 0, O_QUIET },
		{ "connect-timeout", 1, 0, O_CTO }, { "journal", 1, 0, O_JOURNAL }, { "help", 0, 0, O_HELP },
		{ "io-timeout", 1, 0, O_IOTO },
		{ 0, 0, 0, 0 },
	};
	int ch;
	uint64_t u;
	double d;
	while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (ch) {
		case O_RW:
			if (verify_cmd)
				return bad("option for verify", "--rw");
			if (!strcmp(optarg, "read")) o.rw = TB_READ;
			else if (!strcmp(optarg, "write")) o.rw = TB_WRITE;
			else if (!strcmp(optarg, "randread")) o.rw = TB_RANDREAD;
			else if (!strcmp(optarg, "randwrite")) o.rw = TB_RANDWRITE;
			else if (!strcmp(optarg, "randrw")) o.rw = TB_RANDRW;
			else return bad("--rw", optarg);
			break;
		case O_MIX:
			if (parse_u64(optarg, &u) || u > 100)
				return bad("--mix (0..100)", optarg);
			o.mix_read_pct = (int)u;
			break;
		case O_BS:
			if (parse_bs(&o, optarg))
				return bad("--bs (multiples of 512 up to 32M, or SIZE:WEIGHT,...)", optarg);
			break;
		case O_QD:
			if (parse_u64(optarg, &u) || !u || u > 1024)
				return bad("--qd (1..1024)", optarg);
			o.qd = (int)u;
			break;
		case O_CONNS:
			if (parse_u64(optarg, &u) || !u || u > 256)
				return bad("--conns (1..256)", optarg);
			o.conns = (int)u;
			break;
		case O_TIME:
			if (parse_double(optarg, &d) || d <= 0)
				return bad("--time", optarg);
			o.time_s = d;
			break;
		case O_OPS:
			if (parse_u64(optarg, &o.ops) || !o.ops)
				return bad("--ops", optarg);
			break;
		case O_BYTES:
			if (tdo_parse_size(optarg, &o.bytes) || !o.bytes)
				return bad("--bytes", optarg);
			break;
		case O_RANGE: {
			char tmp[128], *colon;
			if (strlen(optarg) >= sizeof(tmp))
				return bad("--range", optarg);
			strcpy(tmp, optarg);
			if (!(colon = strchr(tmp, ':')))
				return bad("--range (OFFSET:LENGTH)", optarg);
			*colon = '\0';
			if (tdo_parse_size(tmp, &o.range_off) || tdo_parse_size(colon + 1, &o.range_len) ||
			    !o.range_len || o.range_off % 512 || o.range_len % 512 ||
			    o.range_off > UINT64_MAX - o.range_len)
				return bad("--range (512-byte aligned OFFSET:LENGTH)", optarg);
			break;
		}
		case O_RATE:
			if (parse_double(optarg, &o.rate) || o.rate <= 0)
				return bad("--rate", optarg);
			break;
		case O_FUA: o.fua = true; break;
		case O_FLUSH:
			if (parse_u64(optarg, &o.flush_every) || !o.flush_every)
				return bad("--flush-every", optarg);
			break;
		case O_SEED:
			if (parse_u64(optarg, &o.seed))
				return bad("--seed", optarg);
			seed_given = true;
			break;
		case O_RECONNECT:
			if (parse_double(optarg, &o.reconnect_s))
				return bad("--reconnect", optarg);
			break;
		case O_PAUSE:
			if (parse_double(optarg, &o.pause_ms) || o.pause_ms <= 0)
				return bad("--pause-ms", optarg);
			break;
		case O_VERIFY: o.journal = optarg; break;
		case O_JOURNAL: journal = optarg; break;
		case O_JSON: o.json = true; break;
		case O_PROGRESS: progress = true; break;
		case O_QUIET: quiet = true; break;
		case O_CTO:
			if (parse_u64(optarg, &u) || !u || u > 600000)
				return bad("--connect-timeout", optarg);
			o.connect_timeout_ms = (int)u;
			break;
		case O_IOTO:
			if (parse_double(optarg, &o.io_timeout_s) || o.io_timeout_s <= 0)
				return bad("--io-timeout", optarg);
			break;
		case 'h': case O_HELP: usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	for (int i = optind; i < argc; i++) {
		char err[256];
		if (o.nuri == TB_MAX_URIS)
			return bad("URI count (at most 16)", argv[i]);
		if (tb_uri_parse(argv[i], &o.uri[o.nuri++], err, sizeof(err))) {
			fprintf(stderr, "testudo-bench: %s: %s\n", argv[i], err);
			return 2;
		}
	}
	if (!o.nuri) {
		usage(stderr);
		return 2;
	}
	if (!seed_given)
		o.seed = random_u64() >> 1;
	o.progress = progress || (!quiet && !o.json && isatty(2));
	struct tb_map map = { 0 };
	static struct tb_result result;    /* 180 KiB of histograms: not on the stack */
	struct tb_result *res = &result;
	uint64_t writer;

	if (verify_cmd) {
		if (!journal || o.journal) {
			fprintf(stderr, "testudo-bench verify: needs --journal JOURNAL\n");
			return 2;
		}
		char err[512];
		uint64_t tail = 0, recs = 0, doubt = 0;
		if (tb_journal_load(journal, &map, &writer, &recs, &doubt, &tail, err, sizeof(err))) {
			fprintf(stderr, "testudo-bench verify: %s\n", err);
			return 2;
		}
		o.rw = TB_RW_VERIFY_PASS;
		if (o.qd == 1)
			o.qd = 16;
		o.progress = progress;
		int rc = tb_run(&o, &map, writer, res);
		if (rc) {
			fprintf(stderr, "testudo-bench verify: %s\n", strerror(-rc));
			return 2;
		}
		res->journal_records = recs;
		res->journal_tail = tail;
		res->in_doubt = doubt;
		/* journaled blocks past the end of the export cannot hold their data */
		for (uint64_t b = res->export_size / TDO_VBLK_SIZE; !res->aborted && b < map.nblocks; b++)
			if (map.acked[b]) {
				res->checked++;
				res->lost++;
				printf("LOST offset %" PRIu64 " (block %" PRIu64 "): beyond the end of the export\n",
				       b * TDO_VBLK_SIZE, b);
			}
		if (o.json)
			tb_report_json(&o, res, stdout);
		else
			tb_report(&o, res, stdout);
		tb_map_free(&map);
		return res->aborted ? 2 : res->lost ? 1 : 0;
	}

	if (journal) {
		fprintf(stderr, "testudo-bench: --journal belongs to 'verify'; a load run takes --verify JOURNAL\n");
		return 2;
	}
	if (o.journal) {
		for (int i = 0; i < o.nbs; i++)
			if (o.bs[i] % TDO_VBLK_SIZE)
				return bad("--bs with --verify (multiples of 4k)", "");
		if (o.range_off % TDO_VBLK_SIZE || o.range_len % TDO_VBLK_SIZE)
			return bad("--range with --verify (multiples of 4k)", "");
	}
	if (!o.time_s && !o.ops && !o.bytes)
		o.time_s = 10;
	writer = random_u64();
	int rc = tb_run(&o, &map, writer, res);
	if (rc) {
		fprintf(stderr, "testudo-bench: %s\n", strerror(-rc));
		return 2;
	}
	if (o.json)
		tb_report_json(&o, res, stdout);
	else
		tb_report(&o, res, stdout);
	if (!o.json)
		printf("  seed      %" PRIu64 "\n", o.seed);
	uint64_t nerr = 0, nbad = 0;
	for (int i = 0; i < 128; i++)
		nerr += res->errs.nbd[i];
	for (int i = 1; i < TB_NBAD; i++)
		nbad += res->errs.bad[i];
	int st = nbad ? 1 : res->aborted ? 2 : nerr ? 3 : 0;
	if (res->aborted)
		fprintf(stderr, "testudo-bench: %s\n", res->abort_reason);
	tb_map_free(&map);
	return st;
}
