/*
 * test_mp_access.c - who may attach. CI runs as root, which passes every file-mode and uid check,
 * so each case forks a worker that drops to another uid/gid (setresuid/setresgid, no supplementary
 * groups) before it connects.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kvt.h"

static struct kvt_kvd kvd;

static void teardown(void)
{
    if (getenv("KVT_VERBOSE"))
        kvt_kvd_dump_log(&kvd);
    kvt_kvd_cleanup(&kvd);
}

/* Run the worker as uid:gid and return kvc_open's result (and the ping's, when it opened). */
static int open_as(const char *uid, const char *gid, int *ping)
{
    struct kvt_proc w;
    char line[200];
    int rc = 1;

    cr_assert_eq(kvt_spawn_worker(&w, &kvd, "acc", (const char *[]){"open-as", uid, gid, NULL}), 0);
    cr_assert_geq(kvt_read_line(&w, line, sizeof(line), 20000), 0);
    cr_assert_eq(sscanf(line, "open %d", &rc), 1, "worker said '%s'", line);
    if (rc == 0) {
        cr_assert_geq(kvt_read_line(&w, line, sizeof(line), 20000), 0);
        cr_assert_eq(sscanf(line, "ping %d", ping), 1, "worker said '%s'", line);
    }
    cr_assert_eq(kvt_wait(&w, 20000), 0);
    kvt_proc_free(&w);
    return rc;
}

Test(access, nobody_refused, .fini = teardown, .timeout = 60)
{
    char path[160];
    int rc, ping = 1;

    cr_assert_eq(kvt_kvd_start(&kvd, NULL), 0);
    /* the file modes stop uid 65534 first */
    rc = open_as("65534", "65534", &ping);
    cr_assert(rc == -EACCES || rc == -EPERM, "uid 65534 must be refused, got %d", rc);
    /* with the modes opened up, kvd's own peer check (SO_PEERCRED) must refuse it */
    cr_assert_eq(chmod(kvd.base, 0755), 0);
    cr_assert_eq(chmod(kvd.run_dir, 0755), 0);
    snprintf(path, sizeof(path), "%s/kvd.sock", kvd.run_dir);
    cr_assert_eq(chmod(path, 0777), 0);
    snprintf(path, sizeof(path), "%s/kvd.zmq", kvd.run_dir);
    cr_assert_eq(chmod(path, 0777), 0);
    rc = open_as("65534", "65534", &ping);
    cr_assert_eq(rc, -EPERM, "kvd must refuse uid 65534 itself, got %d (%s)", rc, kvc_strerror(rc));
}

Test(access, client_group_accepted, .fini = teardown, .timeout = 60)
{
    int rc, ping = 1;

    cr_assert_eq(kvt_kvd_start(&kvd, (const char *[]){"--client-group", "4242", NULL}), 0);
    cr_assert_eq(chmod(kvd.base, 0755), 0); /* the temp dir itself is 0700 */
    rc = open_as("65534", "4242", &ping);
    cr_assert_eq(rc, 0, "a process with the client gid must attach, got %d (%s)", rc,
                 kvc_strerror(rc));
    cr_assert_eq(ping, 0);
    /* and one without it still may not */
    rc = open_as("65534", "4243", &ping);
    cr_assert(rc == -EACCES || rc == -EPERM, "gid 4243 must be refused, got %d", rc);
}
