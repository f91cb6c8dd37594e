/* Unit tests for a client's lease map. */
#include <criterion/criterion.h>
#include <errno.h>

#include "leases.h"
#include "mem.h"

Test(leases, add_get_drop_with_many_keys)
{
    struct kv_leases l = {0};
    const uint32_t n = 5000;
    cr_assert_eq(kv_leases_get(&l, 1), 0);
    cr_assert_eq(kv_leases_drop(&l, 1), -ENOENT);
    cr_assert_eq(kv_leases_add(&l, 1), -ENOSPC, "adding needs a reservation");
    for (uint32_t i = 0; i < n; i++) {
        cr_assert_eq(kv_leases_reserve(&l, 1), 0);
        cr_assert_eq(kv_leases_add(&l, i * 65536u + 3), 0);
    }
    cr_assert_eq(kv_leases_reserve(&l, 1), 0);
    cr_assert_eq(kv_leases_add(&l, 3), 0); /* second lease on id 3 */
    cr_assert_eq(kv_leases_get(&l, 3), 2);
    cr_assert_eq(l.n, n);
    cr_assert_eq(l.total, n + 1);
    /* drop every other key; the rest must still be found (backward-shift deletion) */
    for (uint32_t i = 0; i < n; i += 2)
        cr_assert_eq(kv_leases_drop(&l, i * 65536u + 3), 0);
    cr_assert_eq(kv_leases_get(&l, 3), 1);
    for (uint32_t i = 1; i < n; i += 2)
        cr_assert_eq(kv_leases_get(&l, i * 65536u + 3), 1, "key %u lost", i);
    for (uint32_t i = 2; i < n; i += 2)
        cr_assert_eq(kv_leases_get(&l, i * 65536u + 3), 0);
    uint64_t sum = 0;
    kv_leases_foreach(&l, s) sum += s->count;
    cr_assert_eq(sum, l.total);
    kv_leases_free(&l);
}

Test(leases, reserve_failure_changes_nothing)
{
    struct kv_leases l = {0};
    cr_assert_eq(kv_leases_reserve(&l, 4), 0);
    for (uint32_t i = 0; i < 4; i++)
        kv_leases_add(&l, i);
    kv_mem_fail_after(0);
    int rc = kv_leases_reserve(&l, 1000);
    kv_mem_fail_after(-1);
    cr_assert_eq(rc, -ENOMEM);
    for (uint32_t i = 0; i < 4; i++)
        cr_assert_eq(kv_leases_get(&l, i), 1);
    kv_leases_free(&l);
}
