/* mem.c - see mem.h. */
#include "mem.h"

#include <stdlib.h>

static long fail_after = -1; /* < 0: disarmed */
static unsigned long injected;

static int mem_should_fail(void)
{
    if (fail_after < 0)
        return 0;
    if (fail_after == 0) {
        injected++;
        return 1;
    }
    fail_after--;
    return 0;
}

void *kv_malloc(size_t n)
{
    return mem_should_fail() ? NULL : malloc(n);
}

void *kv_calloc(size_t n, size_t size)
{
    return mem_should_fail() ? NULL : calloc(n, size);
}

void *kv_realloc(void *p, size_t n)
{
    return mem_should_fail() ? NULL : realloc(p, n);
}

void kv_free(void *p)
{
    free(p);
}

void kv_mem_fail_after(long n)
{
    fail_after = n;
}

unsigned long kv_mem_injected(void)
{
    return injected;
}
