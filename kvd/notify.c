/*
 * notify.c - systemd readiness and watchdog (Type=notify). Every function is a no-op when kvd is
 * not started by systemd (sd_notify returns 0 without NOTIFY_SOCKET).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "server.h"

void kvd_notify_ready(struct kvd *d)
{
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) > 0)
        d->watchdog_ms = usec / 1000;
    sd_notifyf(0, "READY=1\nSTATUS=serving %s, %llu MiB %s arena\nMAINPID=%d", d->cfg.run_dir,
               (unsigned long long)(d->arena.bytes >> 20), d->arena.ops ? d->arena.ops->name : "?",
               (int)getpid());
    d->last_watchdog_ms = kv_now_ms();
}

void kvd_notify_status(struct kvd *d, const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    (void)d;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    sd_notifyf(0, "STATUS=%s", buf);
}

void kvd_notify_extend(struct kvd *d, uint64_t usec)
{
    (void)d;
    sd_notifyf(0, "EXTEND_TIMEOUT_USEC=%llu", (unsigned long long)usec);
}

void kvd_notify_stopping(struct kvd *d)
{
    (void)d;
    sd_notify(0, "STOPPING=1\nSTATUS=stopping");
}

uint64_t kvd_notify_tick(struct kvd *d, uint64_t now)
{
    if (!d->watchdog_ms)
        return 1000;
    uint64_t half = d->watchdog_ms / 2;
    if (now - d->last_watchdog_ms >= half) {
        sd_notify(0, "WATCHDOG=1");
        d->last_watchdog_ms = now;
    }
    uint64_t left = d->last_watchdog_ms + half - now;
    return left < 1000 ? left : 1000;
}
