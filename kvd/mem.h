/*
 * mem.h - kvd's allocator with fault injection.
 *
 * Every allocation kvd makes after start-up goes through these, so a test can fail the Nth one
 * (SQLite-style: N = 1, 2, 3, ... through a whole request) and check that the request ends with a
 * clean -ENOMEM and a consistent pool. Failure injection is armed only through kv_mem_fail_after,
 * which the admin protocol exposes only when kvd runs with fault injection enabled.
 */
#ifndef KVD_MEM_H
#define KVD_MEM_H

#include <stddef.h>

void *kv_malloc(size_t n);
void *kv_calloc(size_t n, size_t size);
void *kv_realloc(void *p, size_t n);
void kv_free(void *p);

/* Let n more allocations succeed, then fail every later one until disarmed; n < 0 disarms. */
void kv_mem_fail_after(long n);
/* Number of allocations failed by injection so far. */
unsigned long kv_mem_injected(void);

#endif
