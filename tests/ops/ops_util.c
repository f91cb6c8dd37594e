/* ops_util.c - see ops_util.h. */
#include "ops_util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kv_format.h"

extern char **environ;

int ops_run(const char *const *argv, const char *const *env, uid_t uid, int timeout_ms,
            struct ops_out *out)
{
    int pfd[2];
    pid_t pid;
    long end = kvt_now_ms() + timeout_ms;
    size_t cap = 4096;

    memset(out, 0, sizeof(*out));
    out->text = malloc(cap);
    if (!out->text || pipe(pfd) != 0)
        return -ENOMEM;
    pid = fork();
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        dup2(pfd[1], 1);
        close(pfd[0]);
        close(pfd[1]);
        for (int i = 0; env && env[i]; i++)
            putenv((char *)env[i]);
        if (uid != (uid_t)-1 &&
            (setgroups(0, NULL) != 0 || setgid((gid_t)uid) != 0 || setuid(uid) != 0))
            _exit(126);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(pfd[1]);
    for (;;) {
        struct pollfd p = {.fd = pfd[0], .events = POLLIN};
        long left = end - kvt_now_ms();
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            break;
        if (out->len + 1024 > cap) {
            char *n = realloc(out->text, cap * 2);
            if (!n)
                break;
            out->text = n;
            cap *= 2;
        }
        ssize_t r = read(pfd[0], out->text + out->len, cap - out->len - 1);
        if (r <= 0)
            break;
        out->len += (size_t)r;
    }
    out->text[out->len] = '\0';
    close(pfd[0]);
    int st;
    while (waitpid(pid, &st, WNOHANG) == 0) {
        if (kvt_now_ms() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            out->status = -ETIMEDOUT;
            return -ETIMEDOUT;
        }
        usleep(2000);
    }
    out->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return 0;
}

void ops_out_free(struct ops_out *o)
{
    free(o->text);
    o->text = NULL;
}

static int kvctl_v(const struct kvt_kvd *k, uid_t uid, struct ops_out *out, va_list ap)
{
    const char *argv[32];
    int n = 0;
    const char *a;

    argv[n++] = getenv("OPS_KVCTL");
    if (!argv[0])
        return -ENOENT;
    argv[n++] = "-r";
    argv[n++] = k->run_dir;
    while ((a = va_arg(ap, const char *)) != NULL && n < 31)
        argv[n++] = a;
    argv[n] = NULL;
    return ops_run(argv, NULL, uid, 20000, out);
}

int ops_kvctl(const struct kvt_kvd *k, struct ops_out *out, ...)
{
    va_list ap;
    va_start(ap, out);
    int rc = kvctl_v(k, (uid_t)-1, out, ap);
    va_end(ap);
    return rc;
}

int ops_kvctl_as(const struct kvt_kvd *k, uid_t uid, struct ops_out *out, ...)
{
    va_list ap;
    va_start(ap, out);
    int rc = kvctl_v(k, uid, out, ap);
    va_end(ap);
    return rc;
}

int ops_http(unsigned port, const char *method, const char *path, int *code, char **body)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    char req[256];
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int rc = -EIO;

    *body = NULL;
    if (!buf || s < 0)
        goto out;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        rc = -errno;
        goto out;
    }
    int n = snprintf(req, sizeof(req),
                     "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                     "Content-Length: 0\r\n\r\n",
                     method, path);
    if (write(s, req, (size_t)n) != n)
        goto out;
    for (;;) {
        struct pollfd p = {.fd = s, .events = POLLIN};
        if (poll(&p, 1, 10000) <= 0) {
            rc = -ETIMEDOUT;
            goto out;
        }
        if (len + 4096 > cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb)
                goto out;
            buf = nb;
            cap *= 2;
        }
        ssize_t r = read(s, buf + len, cap - len - 1);
        if (r < 0)
            goto out;
        if (r == 0)
            break;
        len += (size_t)r;
    }
    buf[len] = '\0';
    if (sscanf(buf, "HTTP/1.%*d %d", code) != 1)
        goto out;
    char *b = strstr(buf, "\r\n\r\n");
    *body = strdup(b ? b + 4 : "");
    rc = *body ? 0 : -ENOMEM;
out:
    if (s >= 0)
        close(s);
    free(buf);
    return rc;
}

int ops_fill_chain(struct kvc *c, unsigned n, float k_scale, float v_scale, struct ops_chain *ch)
{
    struct kvc_info info;
    struct kvc_commit cm[8];
    int32_t tokens[8 * 16];
    int rc;

    if (n == 0 || n > 8)
        return -EINVAL;
    memset(ch, 0, sizeof(*ch));
    rc = kvc_get_info(c, &info);
    if (rc)
        return rc;
    const struct kv_layout *l = (const struct kv_layout *)(const void *)&info.layout;
    kvt_tokens(tokens, (size_t)n * l->page_tokens, 7);
    rc = kvc_hash_chain(kvc_get_hasher(c), tokens, (size_t)n * l->page_tokens, NULL, ch->hash, 8);
    if (rc != (int)n)
        return rc < 0 ? rc : -EIO;
    rc = kvc_alloc(c, n, ch->hash, ch->page);
    if (rc)
        return rc;
    for (unsigned i = 0; i < n; i++) {
        uint8_t *page = kvc_page_ptr(c, &ch->page[i]);
        if (!page)
            return -EFAULT;
        memset(page, 0x11, info.page_bytes);
        for (unsigned ly = 0; ly < l->n_layers; ly++)
            for (unsigned kind = 0; kind < 2; kind++)
                for (unsigned h = 0; h < l->n_kv_heads; h++) {
                    int fmt = kind ? l->v_fmt : l->k_fmt;
                    uint8_t *s = page + kv_seg_offset(l, ly, kind, h) + kv_seg_scale_offset(fmt, l);
                    float v = kind ? v_scale : k_scale;
                    for (unsigned t = 0; t < l->page_tokens; t++)
                        memcpy(s + t * 4, &v, 4);
                }
        cm[i] = (struct kvc_commit){
            .page_id = ch->page[i].id, .ntok = l->page_tokens, .hash = ch->hash[i]};
        if (i)
            cm[i].parent = ch->hash[i - 1];
    }
    rc = kvc_commit(c, cm, n, ch->page);
    ch->n = n;
    return rc;
}

void ops_hex(const struct kvc_hash *h, char *out)
{
    for (int i = 0; i < KVC_HASH_BYTES; i++)
        snprintf(out + 2 * i, 3, "%02x", h->b[i]);
}

int ops_kvd_start(struct kvt_kvd *k, const char *const *extra)
{
    const char *args[16] = {"--set", "metrics_listen=127.0.0.1:0"};
    int n = 2;
    for (int i = 0; extra && extra[i] && n < 15; i++)
        args[n++] = extra[i];
    args[n] = NULL;
    return kvt_kvd_start(k, args);
}
