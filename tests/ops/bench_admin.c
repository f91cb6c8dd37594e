/*
 * bench_admin.c - what looking inside costs: the round trip of admin sub-commands and of a metrics
 * scrape, next to a PING in the same run, on a pool of N committed single-page chains.
 * Usage: ops_bench_admin RUN_DIR METRICS_PORT N   (kvd running; see docs/BENCHMARKS.md)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "kvclient.h"
#include "proto.h"
#include "ops_util.h"
static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}
static int cmpd(const void *a, const void *b)
{
    double x = *(double *)a, y = *(double *)b;
    return x < y ? -1 : x > y;
}
int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s RUN_DIR METRICS_PORT N\n", argv[0]);
        return 2;
    }
    const char *run = argv[1];
    unsigned port = (unsigned)atoi(argv[2]);
    int npages = atoi(argv[3]);
    struct kvc_opts o = KVC_OPTS_INIT;
    struct kvc *c;
    o.run_dir = run;
    o.ns = "bench";
    o.layout = (struct kvc_layout){2, 2, 64, 16, KVC_FMT_FP8_E4M3, KVC_FMT_FP8_E4M3, 0};
    if (kvc_open(&o, &c)) {
        puts("open");
        return 1;
    }
    static struct kvc_hash h[256];
    static struct kvc_page pg[256];
    static struct kvc_commit cm[256];
    for (int done = 0; done < npages; done += 256) {
        for (int i = 0; i < 256; i++) {
            memset(&h[i], 0, 16);
            int v = done + i + 1;
            memcpy(h[i].b, &v, 4);
            h[i].b[15] = 0x5a;
        }
        if (kvc_alloc(c, 256, h, pg)) {
            puts("alloc");
            return 1;
        }
        for (int i = 0; i < 256; i++)
            cm[i] = (struct kvc_commit){.page_id = pg[i].id, .ntok = 16, .hash = h[i]};
        if (kvc_commit(c, cm, 256, pg) || kvc_release_pages(c, pg, 256)) {
            puts("commit");
            return 1;
        }
    }
    struct kvc_stats st;
    kvc_stats(c, &st);
    printf("pages committed %llu\n", (unsigned long long)st.pages_committed);
    static uint8_t buf[1 << 20];
    enum { R = 200 };
    double t[R];
    const char *names[] = {"PING",
                           "ADMIN STATUS",
                           "ADMIN POOL",
                           "ADMIN CHAINS (one reply)",
                           "ADMIN CHAINS (whole listing)",
                           "GET /metrics"};
    double med[6];
    for (int k = 0; k < 6; k++) {
        for (int r = 0; r < R; r++) {
            double t0 = now();
            size_t len;
            uint32_t cnt;
            struct kvp_admin_range rg = {0, 0};
            if (k == 0)
                kvc_ping(c);
            else if (k == 1)
                kvc_admin(c, KVP_ADMIN_STATUS, NULL, 0, buf, sizeof buf, &len, &cnt);
            else if (k == 2)
                kvc_admin(c, KVP_ADMIN_POOL, &rg, sizeof rg, buf, sizeof buf, &len, &cnt);
            else if (k == 3)
                kvc_admin(c, KVP_ADMIN_CHAINS, &rg, sizeof rg, buf, sizeof buf, &len, &cnt);
            else if (k == 4) {
                for (;;) {
                    struct kvp_admin_list l;
                    kvc_admin(c, KVP_ADMIN_CHAINS, &rg, sizeof rg, buf, sizeof buf, &len, &cnt);
                    memcpy(&l, buf, 8);
                    if (l.next >= l.total)
                        break;
                    rg.start = l.next;
                }
            } else {
                int code;
                char *b;
                ops_http(port, "GET", "/metrics", &code, &b);
                free(b);
            }
            t[r] = now() - t0;
        }
        qsort(t, R, sizeof(double), cmpd);
        med[k] = t[R / 2];
        printf("%-30s median %8.1f us  (%.1fx PING)\n", names[k], med[k] * 1e6, med[k] / med[0]);
    }
    kvc_close(c);
    return 0;
}
