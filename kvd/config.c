/* config.c - see config.h. The INI syntax itself is parsed by inih (libinih). */
#include "config.h"

#include <errno.h>
#include <ini.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

enum key_type { STR, SIZE, UINT, BOOL };

struct key_info {
    const char *key;
    enum key_type type;
    size_t off;
    const char *def;
    const char *doc;
};

static const struct key_info keys[] = {
#define KEY_INFO(k, t, f, d, doc) {k, t, offsetof(struct kv_config, f), d, doc},
    KV_CONFIG_MAP(KEY_INFO)
#undef KEY_INFO
};
#define NKEYS (sizeof(keys) / sizeof(keys[0]))

int kv_parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    uint64_t mul = 1;

    if (errno || end == s || s[0] == '-')
        return -EINVAL;
    switch (*end) {
    case 'k':
    case 'K':
        mul = 1ull << 10;
        end++;
        break;
    case 'm':
    case 'M':
        mul = 1ull << 20;
        end++;
        break;
    case 'g':
    case 'G':
        mul = 1ull << 30;
        end++;
        break;
    case 't':
    case 'T':
        mul = 1ull << 40;
        end++;
        break;
    default:
        break;
    }
    if (*end == 'i' || *end == 'B')
        end += (*end == 'i' && end[1] == 'B') ? 2 : 1;
    if (*end != '\0' || v > UINT64_MAX / mul)
        return -EINVAL;
    *out = v * mul;
    return 0;
}

static int parse_uint(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0); /* "0660" is octal, as modes are written */
    if (errno || end == s || *end != '\0' || s[0] == '-')
        return -EINVAL;
    *out = v;
    return 0;
}

static int parse_bool(const char *s, uint64_t *out)
{
    if (!strcasecmp(s, "true") || !strcasecmp(s, "yes") || !strcmp(s, "1") || !strcasecmp(s, "on"))
        *out = 1;
    else if (!strcasecmp(s, "false") || !strcasecmp(s, "no") || !strcmp(s, "0") ||
             !strcasecmp(s, "off"))
        *out = 0;
    else
        return -EINVAL;
    return 0;
}

int kv_config_set(struct kv_config *c, const char *key, const char *value, char *err, size_t len)
{
    for (size_t i = 0; i < NKEYS; i++) {
        const struct key_info *k = &keys[i];
        void *p = (char *)c + k->off;
        int rc = 0;

        if (strcmp(k->key, key) != 0)
            continue;
        switch (k->type) {
        case STR:
            if (strlen(value) >= KV_PATH_MAX)
                rc = -EINVAL;
            else
                strcpy(p, value);
            break;
        case SIZE:
            rc = kv_parse_size(value, p);
            break;
        case UINT:
            rc = parse_uint(value, p);
            break;
        case BOOL:
            rc = parse_bool(value, p);
            break;
        }
        if (rc)
            snprintf(err, len, "bad value '%.64s' for %s", value, key);
        return rc;
    }
    snprintf(err, len, "unknown key '%.64s'", key);
    return -ENOENT;
}

void kv_config_defaults(struct kv_config *c)
{
    char err[128];
    memset(c, 0, sizeof(*c));
    for (size_t i = 0; i < NKEYS; i++)
        kv_config_set(c, keys[i].key, keys[i].def, err, sizeof(err));
}

struct load_ctx {
    struct kv_config *c;
    char *err;
    size_t len;
    int failed;
};

static int load_handler(void *user, const char *section, const char *name, const char *value)
{
    struct load_ctx *ctx = user;
    char why[160];

    if (strcmp(section, "kvd") != 0) {
        snprintf(ctx->err, ctx->len, "unknown section [%.32s]", section);
        ctx->failed = 1;
        return 0;
    }
    if (kv_config_set(ctx->c, name, value, why, sizeof(why)) != 0) {
        snprintf(ctx->err, ctx->len, "%s", why);
        ctx->failed = 1;
        return 0;
    }
    return 1;
}

int kv_config_load(struct kv_config *c, const char *path, char *err, size_t len)
{
    char why[200] = "";
    struct load_ctx ctx = {c, why, sizeof(why), 0};
    int rc = ini_parse(path, load_handler, &ctx);

    if (rc == -1) {
        snprintf(err, len, "%s: %s", path, strerror(errno));
        return -errno ? -errno : -ENOENT;
    }
    if (rc != 0) {
        snprintf(err, len, "%s:%d: %s", path, rc, ctx.failed ? why : "syntax error");
        return -EINVAL;
    }
    return 0;
}

void kv_config_resolve_dirs(struct kv_config *c)
{
    const char *e;
    if (!c->run_dir[0]) {
        if ((e = getenv("RUNTIME_DIRECTORY")) && *e)
            snprintf(c->run_dir, KV_PATH_MAX, "%s", e);
        else if (geteuid() == 0 || !(e = getenv("XDG_RUNTIME_DIR")))
            snprintf(c->run_dir, KV_PATH_MAX, "/run/kvd");
        else
            snprintf(c->run_dir, KV_PATH_MAX, "%s/kvd", e);
    }
    if (!c->state_dir[0]) {
        if ((e = getenv("STATE_DIRECTORY")) && *e)
            snprintf(c->state_dir, KV_PATH_MAX, "%s", e);
        else if (geteuid() == 0 || !(e = getenv("HOME")))
            snprintf(c->state_dir, KV_PATH_MAX, "/var/lib/kvd");
        else
            snprintf(c->state_dir, KV_PATH_MAX, "%s/.local/state/kvd", e);
    }
}

void kv_config_print(const struct kv_config *c, FILE *f, int with_docs)
{
    fprintf(f, "[kvd]\n");
    for (size_t i = 0; i < NKEYS; i++) {
        const struct key_info *k = &keys[i];
        const void *p = (const char *)c + k->off;
        if (with_docs)
            fprintf(f, "\n# %s (default: %s)\n", k->doc, k->def[0] ? k->def : "empty");
        switch (k->type) {
        case STR:
            fprintf(f, "%s = %s\n", k->key, (const char *)p);
            break;
        case SIZE:
        case UINT: {
            uint64_t v = *(const uint64_t *)p;
            if (strcmp(k->key, "socket_mode") == 0)
                fprintf(f, "%s = 0%" PRIo64 "\n", k->key, v);
            else
                fprintf(f, "%s = %" PRIu64 "\n", k->key, v);
            break;
        }
        case BOOL:
            fprintf(f, "%s = %s\n", k->key, *(const uint64_t *)p ? "true" : "false");
            break;
        }
    }
}
