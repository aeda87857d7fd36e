/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: shared helpers. The logger writes whole lines with one write()
 * so lines from worker threads never interleave.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "testudo/engine.h"
#include "testudo/util.h"

static int log_level = TDO_LOG_INFO;

void tdo_log_set_level(int level) { log_level = level; }
int tdo_log_get_level(void) { return log_level; }

void tdo_log(int level, const char *component, const char *fmt, ...)
{
	static const char *names[] = { "error", "warn", "info", "debug" };
	char line[1024];
	va_list ap;
	int n;

	if (level > log_level)
		return;
	n = snprintf(line, sizeof line, "%s %s: ",
	             names[level < 0 ? 0 : level > 3 ? 3 : level], component);
	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof line - 2)
		n = (int)sizeof line - 2;
	line[n++] = '\n';
	if (write(STDERR_FILENO, line, (size_t)n) < 0) {
		/* nowhere left to report it */
	}
}

int tdo_parse_size(const char *s, uint64_t *out)
{
	uint64_t ip = 0, frac = 0, fscale = 1, mult = 1, v;
	const char *p = s;
	int nd = 0;

	if (!s)
		return -EINVAL;
	for (; *p >= '0' && *p <= '9'; p++, nd++) {
		uint64_t d = (uint64_t)(*p - '0');
		if (ip > (UINT64_MAX - d) / 10)
			return -EINVAL;
		ip = ip * 10 + d;
	}
	if (*p == '.') {
		p++;
		for (; *p >= '0' && *p <= '9'; p++, nd++) {
			if (fscale > UINT64_MAX / 100)
				return -EINVAL;
			frac = frac * 10 + (uint64_t)(*p - '0');
			fscale *= 10;
		}
	}
	if (nd == 0)
		return -EINVAL;
	switch (*p) {
	case 'k': case 'K': mult = 1ull << 10; p++; break;
	case 'm': case 'M': mult = 1ull << 20; p++; break;
	case 'g': case 'G': mult = 1ull << 30; p++; break;
	case 't': case 'T': mult = 1ull << 40; p++; break;
	case 'p': case 'P': mult = 1ull << 50; p++; break;
	default: break;
	}
	if (mult > 1 && p[0] == 'i' && p[1] == 'B')
		p += 2;
	else if (*p == 'B' || *p == 'b')
		p++;
	if (*p)
		return -EINVAL;
	if (ip > UINT64_MAX / mult)
		return -EINVAL;
	v = ip * mult;
	if (frac) {
		/* the fraction must come to whole bytes */
		unsigned __int128 f = (unsigned __int128)frac * mult;
		if (f % fscale)
			return -EINVAL;
		if (v + (uint64_t)(f / fscale) < v)
			return -EINVAL;
		v += (uint64_t)(f / fscale);
	}
	*out = v;
	return 0;
}

char *tdo_format_size(uint64_t b, char *buf, size_t len)
{
	static const char *u[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
	double v = (double)b;
	int i = 0;

	while (v >= 1024 && i < 5) {
		v /= 1024;
		i++;
	}
	if (i == 0)
		snprintf(buf, len, "%llu B", (unsigned long long)b);
	else
		snprintf(buf, len, "%.1f %s", v, u[i]);
	return buf;
}

#if defined(TDO_CSUM_AVX2) && defined(__x86_64__)
uint64_t tdo_csum_avx2(const void *p, size_t len); /* csum_avx2.c */
#endif

bool tdo_name_chars_ok(const char *s, size_t max)
{
	size_t n = strlen(s);

	if (n == 0 || n > max)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

bool tdo_env_on(const char *name)
{
	const char *s = getenv(name);

	return s && *s == '1';
}

uint64_t tdo_csum(const void *p, size_t len)
{
#if defined(TDO_CSUM_AVX2) && defined(__x86_64__)
	if (len > 240 && __builtin_cpu_supports("avx2")) /* below that, xxh3 has no vector loop */
		return tdo_csum_avx2(p, len);
#endif
	return XXH3_64bits(p, len);
}

uint64_t tdo_csum_two(const void *a, size_t alen, const void *b, size_t blen)
{
	XXH3_state_t st;

	XXH3_64bits_reset(&st);
	XXH3_64bits_update(&st, a, alen);
	XXH3_64bits_update(&st, b, blen);
	return XXH3_64bits_digest(&st);
}

uint64_t tdo_now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

const char *tdo_strerror(int err)
{
	switch (err) {
	case 0: return "success";
	case TDO_EFORMAT: return "not a Testudo device, or an unsupported format version";
	case TDO_EDAMAGED: return "device damaged: no valid superblock or checkpoint";
	case TDO_EPOISON: return "engine stopped after a failed device write or sync";
	case TDO_EEXISTS: return "device already holds a Testudo format (use --force to overwrite)";
	case TDO_ELOCKED: return "device is in use by another process (a running testudod?)";
	case TDO_ENOVOL: return "no such volume";
	case TDO_EVOLEXIST: return "a volume of that name already exists";
	case TDO_ENOSPACE: return "not enough space on the device for that volume size";
	case TDO_ETOOSMALL: return "too small for 8 segments and the checkpoint areas";
	case TDO_ELOGDAMAGED: return "the log is damaged before later batches; not opened, so none is cut off (testudo check names the place)";
	default:
		if (err < 0 && err > -4000)
			return strerror(-err);
		return "unknown error";
	}
}
