/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: testudo, the command line: main(), usage, and what the commands
 * share (the error line, SIZE arguments). main() takes the global options
 * (--device, --admin, -v) and hands the command to offline.c when it works
 * on a device directly (format, inspect, check, volume with --device) or
 * to online.c when it asks a running testudod (volume, promote, status);
 * usage() lists every command. Errors are one line on standard error and a
 * non-zero exit status: 1 when a command fails, 2 when main() does not
 * know the option or command (or inspect or check cannot read a device).
 * This file must never open a device or a socket itself: a command's work
 * and output belong to its own file.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "testudo/engine.h"
#include "testudo/format.h"
#include "testudo/util.h"

#include "internal.h"

static const char *prog = "testudo";

static void usage(FILE *f)
{
	fprintf(f,
	        "usage:\n"
	        "online, with a running testudod (--admin default 127.0.0.1:10810):\n"
	        "  testudo [--admin HOST:PORT] volume create NAME SIZE [--compress lz4] [--replicas N] [--primary ID] [--json]\n"
	        "  testudo [--admin HOST:PORT] volume list [--json]\n"
	        "  testudo [--admin HOST:PORT] volume resize NAME SIZE [--json]\n"
	        "  testudo [--admin HOST:PORT] volume delete NAME [--json]\n"
	        "  testudo [--admin HOST:PORT] volume verify NAME [--json]     (a cluster: compare the replicas)\n"
	        "  testudo [--admin HOST:PORT] promote NAME --node ID [--json] (a cluster: make ID the primary)\n"
	        "  testudo [--admin HOST:PORT] status [--json]\n"
	        "offline, on a device no daemon holds:\n"
	        "  testudo format PATH [--size SIZE] [--backend file|pmem] [--segment-size SIZE] [--force] [--sparse]\n"
	        "  testudo --device PATH volume create NAME SIZE [--compress lz4]\n"
	        "  testudo --device PATH volume list [--json]\n"
	        "  testudo --device PATH volume resize NAME SIZE\n"
	        "  testudo --device PATH volume delete NAME\n"
	        "  testudo --device PATH volume import NAME FILE\n"
	        "  testudo --device PATH volume export NAME FILE\n"
	        "  testudo inspect PATH [--json]\n"
	        "  testudo check PATH\n"
	        "SIZE takes K, M, G and T suffixes (powers of 1024). format writes zeros into a regular\n"
	        "file's holes, so the log never allocates file system space as it runs (--sparse: leave them).\n");
}

int cli_die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 1;
}

int cli_parse_size(const char *what, const char *s, uint64_t *out)
{
	if (tdo_parse_size(s, out) < 0) {
		cli_die("invalid %s '%s' (expected a number with an optional K/M/G/T suffix)", what, s);
		return -1;
	}
	return 0;
}

int cli_parse_vol_size(const char *arg, uint64_t *size)
{
	if (cli_parse_size("size", arg, size))
		return 1;
	if (*size == 0 || *size % TDO_SECTOR_SIZE)
		return cli_die("volume size must be a positive multiple of 512 bytes");
	return 0;
}

int main(int argc, char **argv)
{
	const char *dev = NULL, *admin = NULL;
	struct admin_addr aa;
	int i = 1;

	tdo_log_set_level(TDO_LOG_WARN);
	tdo_engine_sigbus_install(); /* mapped reads; without it the engine uses pread */
	while (i < argc && argv[i][0] == '-') {
		if (!strcmp(argv[i], "--device") && i + 1 < argc) {
			dev = argv[i + 1];
			i += 2;
		} else if (!strcmp(argv[i], "--admin") && i + 1 < argc) {
			admin = argv[i + 1];
			i += 2;
		} else if (!strcmp(argv[i], "-v")) {
			tdo_log_set_level(TDO_LOG_DEBUG);
			i++;
		} else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			usage(stdout);
			return 0;
		} else {
			cli_die("unknown option '%s' (see testudo --help)", argv[i]);
			return 2;
		}
	}
	if (i >= argc) {
		usage(stderr);
		return 2;
	}
	if (dev && admin)
		return cli_die("--device works on a device offline, --admin talks to testudod: give one, not both");
	if (admin_parse_addr(admin ? admin : ADMIN_DEFAULT, &aa) < 0)
		return cli_die("invalid --admin '%s' (expected HOST:PORT, [IPv6]:PORT or :PORT)", admin);
	if (!strcmp(argv[i], "format"))
		return offline_format(argc - i - 1, argv + i + 1);
	if (!strcmp(argv[i], "volume") && dev)
		return offline_volume(dev, argc - i - 1, argv + i + 1);
	if (!strcmp(argv[i], "volume"))
		return online_volume(&aa, argc - i - 1, argv + i + 1);
	if (!strcmp(argv[i], "promote")) {
		if (dev)
			return cli_die("promote asks testudod (--admin), not a device");
		return online_promote(&aa, argc - i - 1, argv + i + 1);
	}
	if (!strcmp(argv[i], "status")) {
		if (dev)
			return cli_die("status asks testudod; for a device no daemon holds, use testudo inspect PATH");
		return online_status(&aa, argc - i - 1, argv + i + 1);
	}
	if (!strcmp(argv[i], "inspect") || !strcmp(argv[i], "check"))
		return offline_inspect(argv[i], dev, argc - i - 1, argv + i + 1);
	cli_die("unknown command '%s' (see testudo --help)", argv[i]);
	return 2;
}
