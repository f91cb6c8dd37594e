/*
 * metrics.c - Prometheus endpoint. PLACEHOLDER until the operations work lands: the endpoint is
 * reported as unavailable; kvd_stats_refresh is real.
 */
#include <errno.h>
#include <string.h>

#include "server.h"

void kvd_stats_refresh(struct kvd *d)
{
    struct kv_pool_counts pc;
    kv_pool_counts(&d->pool, &pc);
    d->st.clients = d->nclients;
    d->st.namespaces = d->pool.n_ns;
    d->st.pages_total = pc.pages_total;
    d->st.pages_free = pc.pages_free;
    d->st.pages_writing = pc.pages_writing;
    d->st.pages_committed = pc.pages_committed;
    d->st.pages_pinned = pc.pages_pinned;
    d->st.chunks_total = d->pool.nchunks;
    d->st.chunks_used = pc.chunks_used;
    d->st.evictions = d->pool.evictions;
}

int kvd_metrics_open(struct kvd *d)
{
    d->metrics_fd = -1;
    return -ENOSYS;
}

void kvd_metrics_service(struct kvd *d)
{
    (void)d;
}

void kvd_metrics_close(struct kvd *d)
{
    (void)d;
}
