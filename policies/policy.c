/* policy.c - the table of eviction policies. */
#include "policy.h"

#include <string.h>

static const struct pol_ops *const all_policies[] = {&pol_lru_ops, &pol_h2o_ops};

const struct pol_ops *pol_find(const char *name)
{
    for (size_t i = 0; i < sizeof(all_policies) / sizeof(all_policies[0]); i++)
        if (strcmp(all_policies[i]->name, name) == 0)
            return all_policies[i];
    return NULL;
}

const char *pol_names(void)
{
    return "lru,h2o";
}
