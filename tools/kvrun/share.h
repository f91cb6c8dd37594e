/*
 * share.h - kvrun's use of kvd: attach with a fallback, prefill through the shared cache, and the
 * multi-worker sharing demonstration (`kvrun share`, the README's command 1).
 */
#ifndef KVRUN_SHARE_H
#define KVRUN_SHARE_H

#include "kvshare.h"
#include "model.h"

/* Attach s to kvd at run_dir in the namespace of this model and layout. kvd unreachable: one line
 * on stderr, s stays detached (s->c == NULL) and kvrun runs without the cache. Returns 1 when
 * attached, else 0. */
int share_attach(struct kvshare *s, const char *run_dir, const char *model_path,
                 const struct kv_layout *lay, unsigned max_tokens);

/* Prefill ids[0 .. n) into the empty cache c and write the last token's logits: through kvd when s
 * is attached, else (or after a kvd error, reported on stderr, s then detached) locally. */
int share_prefill(struct kvshare *s, const struct model *m, struct kvcache *c, const int32_t *ids,
                  unsigned n, float *logits);

struct share_opts {
    const char *run_dir; /* kvd's */
    const char *model_path;
    const char *system; /* system prompt text */
    size_t system_len;
    const char *questions; /* one question a line: workers' questions, then the follow-up */
    int fmt;
    unsigned workers, n_gen, page_tokens, group;
};
/* The demonstration: see share.c. 0 or a negative errno. */
int share_demo(struct model *m, const struct share_opts *o);

#endif
