/*
 * policy.h - page eviction policies behind one ops table.
 *
 * A policy sees only the pages that are *evictable* right now: committed, unpinned and leaves of
 * their chain (no committed child). The daemon adds a page when it becomes evictable, removes it
 * when it stops being so (pinned, got a child, freed), touches it on every hit (a hit on a pinned
 * page is told once, as the touch when its last lease goes), and feeds it the attention scores
 * workers report. victim() names the page to evict next without removing it; the
 * daemon then removes it and takes it through EVICTING.
 *
 * Entries are intrusive (embedded in the daemon's page descriptor), so no call allocates and none
 * can fail once the policy exists. One policy instance per namespace. Not thread-safe: the daemon
 * is single-threaded.
 */
#ifndef POL_POLICY_H
#define POL_POLICY_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct pol_entry {
    struct pol_entry *prev, *next; /* list or heap position (policy-private) */
    struct pol_entry *child;       /* heap position (policy-private) */
    uint64_t tick;                 /* last access, in policy ticks */
    double score;                  /* attention mass workers reported for the page, summed */
    double key;                    /* the policy's ordering key, if it keeps one */
    uint8_t linked;                /* 1 while the policy holds the entry */
};

struct pol;

struct pol_ops {
    const char *name;
    int (*init)(struct pol **p); /* 0 or -ENOMEM */
    void (*free)(struct pol *p);
    void (*add)(struct pol *p, struct pol_entry *e);    /* e became evictable */
    void (*remove)(struct pol *p, struct pol_entry *e); /* e no longer evictable */
    void (*touch)(struct pol *p, struct pol_entry *e);  /* hit; e may or may not be linked */
    /* a worker reported attention mass for e's tokens (sum over tokens given) */
    void (*score)(struct pol *p, struct pol_entry *e, double mass);
    struct pol_entry *(*victim)(struct pol *p); /* next to evict, NULL if none */
    size_t (*count)(const struct pol *p);       /* entries held */
};

extern const struct pol_ops pol_lru_ops; /* least recently used; scores are kept, not used */
extern const struct pol_ops pol_h2o_ops; /* lowest attention mass, aged since last use (h2o.c) */

/* Policy by name ("lru", "h2o"), or NULL. */
const struct pol_ops *pol_find(const char *name);
/* Comma-separated names of all policies (no spaces), for help and errors. */
const char *pol_names(void);

#ifdef __cplusplus
}
#endif
#endif
