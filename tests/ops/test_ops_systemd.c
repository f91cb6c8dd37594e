/*
 * test_ops_systemd.c - kvd as a systemd service: the unit passes `systemd-analyze verify` (on a
 * copy whose ExecStart is the built binary; a missing binary must fail it), the sd_notify
 * protocol seen on a NOTIFY_SOCKET the test owns (READY=1, STATUS=, EXTEND_TIMEOUT_USEC=,
 * WATCHDOG=1 at half the interval, STOPPING=1), journald priority prefixes, and the example
 * configuration documents every key and loads.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ops_util.h"

static char tmp[64];

static void mk_tmp(void)
{
    snprintf(tmp, sizeof(tmp), "/tmp/kvd-ops.XXXXXX");
    cr_assert_not_null(mkdtemp(tmp));
}

static void rm_tmp(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
    if (tmp[0] && getenv("KVT_KEEP") == NULL && system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmp);
}

/* Copy the unit with ExecStart pointing at exe; returns the copy's path in out. */
static void unit_copy(const char *exe, char *out, size_t cap)
{
    char src[512], line[1024];
    snprintf(src, sizeof(src), "%s/systemd/kvd.service", getenv("KVD_SRC_DIR"));
    snprintf(out, cap, "%s/kvd.service", tmp);
    FILE *in = fopen(src, "r"), *o = fopen(out, "w");
    cr_assert(in && o, "cannot copy %s", src);
    int seen = 0;
    while (fgets(line, sizeof(line), in)) {
        if (strncmp(line, "ExecStart=", 10) == 0) {
            char *rest = strstr(line, " --config");
            fprintf(o, "ExecStart=%s%s", exe, rest ? rest : "\n");
            seen = 1;
        } else {
            fputs(line, o);
        }
    }
    fclose(in);
    fclose(o);
    cr_assert(seen, "no ExecStart in the unit");
}

static int verify(const char *unit)
{
    struct ops_out o;
    const char *argv[] = {"/usr/bin/systemd-analyze", "verify", "--man=no", unit, NULL};
    cr_assert_eq(ops_run(argv, NULL, (uid_t)-1, 60000, &o), 0);
    ops_out_free(&o);
    return o.status;
}

Test(ops_systemd, unit_verifies, .init = mk_tmp, .fini = rm_tmp, .timeout = 120)
{
    char unit[256];
    if (access("/usr/bin/systemd-analyze", X_OK) != 0)
        cr_skip_test("systemd-analyze is not installed");
    unit_copy(getenv("KVT_KVD"), unit, sizeof(unit));
    cr_expect_eq(verify(unit), 0, "systemd-analyze verify %s failed (see stderr)", unit);
    /* the check has teeth: a unit whose binary does not exist is refused */
    unit_copy("/nonexistent/sbin/kvd", unit, sizeof(unit));
    cr_expect_neq(verify(unit), 0, "verify accepted a missing ExecStart binary");
}

Test(ops_systemd, unit_has_the_required_settings)
{
    char path[512], text[16384];
    snprintf(path, sizeof(path), "%s/systemd/kvd.service", getenv("KVD_SRC_DIR"));
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    static const char *const need[] = {
        "Type=notify\n",
        "WatchdogSec=",
        "RuntimeDirectory=kvd\n",
        "StateDirectory=kvd\n",
        "User=kvd\n",
        "ProtectSystem=strict\n",
        "NoNewPrivileges=yes\n",
        "DevicePolicy=closed\n",
        "DeviceAllow=/dev/nvidiactl",
        "SystemCallFilter=@system-service\n",
        "Restart=on-failure\n",
        "LimitMEMLOCK=",
        "ExecReload=",
    };
    for (size_t i = 0; i < sizeof(need) / sizeof(need[0]); i++)
        cr_expect(strstr(text, need[i]) != NULL, "kvd.service lacks %s", need[i]);
}

/* Read datagrams until want (a substring) was seen `times` times or timeout_ms passed. Every
 * message is appended to log. Returns how often want was seen. */
static int notify_wait(int s, const char *want, int times, int timeout_ms, char *log, size_t cap)
{
    long end = kvt_now_ms() + timeout_ms;
    int seen = 0;
    while (seen < times) {
        long left = end - kvt_now_ms();
        struct pollfd p = {.fd = s, .events = POLLIN};
        char msg[1024];
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            break;
        ssize_t r = recv(s, msg, sizeof(msg) - 1, 0);
        if (r <= 0)
            continue;
        msg[r] = '\0';
        if (strlen(log) + (size_t)r + 2 < cap) {
            strcat(log, msg);
            strcat(log, "|");
        }
        for (char *p2 = msg; (p2 = strstr(p2, want)) != NULL; p2 += strlen(want))
            seen++;
    }
    return seen;
}

Test(ops_systemd, notify_ready_watchdog_stopping, .init = mk_tmp, .fini = rm_tmp, .timeout = 60)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    char path[128], run[128], state[128], env_sock[200], log[16384] = "";
    int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

    cr_assert_geq(s, 0);
    snprintf(path, sizeof(path), "%s/notify", tmp);
    snprintf(run, sizeof(run), "%s/run", tmp);
    snprintf(state, sizeof(state), "%s/state", tmp);
    cr_assert_lt(strlen(path), sizeof(sa.sun_path));
    memcpy(sa.sun_path, path, strlen(path) + 1);
    cr_assert_eq(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
    snprintf(env_sock, sizeof(env_sock), "NOTIFY_SOCKET=%s", path);

    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 2);
        putenv(env_sock);
        putenv("WATCHDOG_USEC=200000"); /* 200 ms: a ping at least every 100 ms */
        unsetenv("WATCHDOG_PID");
        execl(getenv("KVT_KVD"), "kvd", "--run-dir", run, "--state-dir", state, "--arena-size",
              "64M", "--set", "metrics_listen=", (char *)NULL);
        _exit(127);
    }
    int ready = notify_wait(s, "READY=1", 1, 20000, log, sizeof(log));
    cr_expect_eq(ready, 1, "no READY=1; got: %s", log);
    int pings = notify_wait(s, "WATCHDOG=1", 2, 5000, log, sizeof(log));
    cr_expect_geq(pings, 2, "WATCHDOG=1 seen %d times; got: %s", pings, log);
    kill(pid, SIGTERM);
    int stopping = notify_wait(s, "STOPPING=1", 1, 10000, log, sizeof(log));
    cr_expect_eq(stopping, 1, "no STOPPING=1 after SIGTERM; got: %s", log);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "kvd exit status %d", st);
    cr_expect(strstr(log, "STATUS=") != NULL, "no STATUS= line: %s", log);
    cr_expect(strstr(log, "EXTEND_TIMEOUT_USEC=") != NULL, "no EXTEND_TIMEOUT_USEC: %s", log);
    cr_expect(strstr(log, "MAINPID=") != NULL, "no MAINPID: %s", log);
    close(s);
}

Test(ops_systemd, journald_priority_prefixes, .init = mk_tmp, .fini = rm_tmp, .timeout = 60)
{
    char run[128], state[128];
    struct ops_out o;
    snprintf(run, sizeof(run), "%s/run", tmp);
    snprintf(state, sizeof(state), "%s/state", tmp);
    /* an invalid arena size makes kvd log an error and exit at once; stderr goes to the pipe */
    const char *argv[] = {"/bin/sh", "-c",
                          "exec \"$KVT_KVD\" --run-dir \"$R\" --state-dir \"$S\" "
                          "--arena-size 64M --chunk-size 3K 2>&1",
                          NULL};
    char r_env[160], s_env[160];
    snprintf(r_env, sizeof(r_env), "R=%s", run);
    snprintf(s_env, sizeof(s_env), "S=%s", state);
    const char *env[] = {"JOURNAL_STREAM=8:12345", r_env, s_env, NULL};
    cr_assert_eq(ops_run(argv, env, (uid_t)-1, 30000, &o), 0);
    cr_expect_neq(o.status, 0);
    cr_expect(strstr(o.text, "<3>") == o.text || strstr(o.text, "\n<3>") ||
                  strstr(o.text, "<5>") == o.text,
              "no journald prefix: %s", o.text);
    cr_expect(strstr(o.text, "<3>") != NULL, "the error line needs priority 3: %s", o.text);
    ops_out_free(&o);
}

Test(ops_systemd, example_config_documents_every_key, .timeout = 30)
{
    char conf[512], text[65536];
    struct ops_out o;
    snprintf(conf, sizeof(conf), "%s/systemd/kvd.conf", getenv("KVD_SRC_DIR"));
    FILE *f = fopen(conf, "r");
    cr_assert_not_null(f);
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    static char man[65536];
    snprintf(conf, sizeof(conf), "%s/docs/man/kvd.conf.5", getenv("KVD_SRC_DIR"));
    f = fopen(conf, "r");
    cr_assert_not_null(f);
    n = fread(man, 1, sizeof(man) - 1, f);
    fclose(f);
    man[n] = '\0';
    snprintf(conf, sizeof(conf), "%s/systemd/kvd.conf", getenv("KVD_SRC_DIR"));
    const char *argv[] = {getenv("KVT_KVD"), "--print-config", NULL};
    cr_assert_eq(ops_run(argv, NULL, (uid_t)-1, 10000, &o), 0);
    cr_assert_eq(o.status, 0);
    int keys = 0;
    char *save = NULL;
    for (char *l = strtok_r(o.text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        char key[128], pat[160];
        if (sscanf(l, "%127[a-z_0-9] =", key) != 1)
            continue;
        keys++;
        snprintf(pat, sizeof(pat), "\n%s =", key);
        char *at = strstr(text, pat);
        cr_expect_not_null(at, "kvd.conf does not set '%s'", key);
        /* the key's documentation: a comment line right above it */
        cr_expect(at && at > text + 2 && at[-1] != '\n', "no comment above '%s'", key);
        snprintf(pat, sizeof(pat), "\n.B %s\n", key);
        cr_expect_not_null(strstr(man, pat), "kvd.conf(5) does not document '%s'", key);
    }
    cr_expect_geq(keys, 10);
    ops_out_free(&o);
    /* and kvd accepts the file */
    const char *argv2[] = {getenv("KVT_KVD"), "-c", conf, "--print-config", NULL};
    cr_assert_eq(ops_run(argv2, NULL, (uid_t)-1, 10000, &o), 0);
    cr_expect_eq(o.status, 0, "kvd -c kvd.conf --print-config failed");
    cr_expect(strstr(o.text, "client_group = kvd-client") != NULL, "%s", o.text);
    ops_out_free(&o);
}

static void write_conf(const char *path, unsigned attach_ms, unsigned heartbeat_ms,
                       unsigned max_clients)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fprintf(f, "[kvd]\nattach_timeout_ms = %u\nheartbeat_ms = %u\nmax_clients = %u\n", attach_ms,
            heartbeat_ms, max_clients);
    fclose(f);
}

static long config_value(struct kvt_kvd *k, const char *key)
{
    struct ops_out o;
    char pat[64];
    cr_assert_eq(ops_kvctl(k, &o, "config", NULL), 0);
    cr_assert_eq(o.status, 0, "%s", o.text);
    snprintf(pat, sizeof(pat), "\n%s = ", key);
    char *at = strstr(o.text, pat);
    cr_assert_not_null(at, "no %s in %s", key, o.text);
    long v = strtol(at + strlen(pat), NULL, 10);
    ops_out_free(&o);
    return v;
}

/* SIGHUP re-reads the file: a reloadable key changes, a key given on the command line keeps its
 * value, a key that needs a restart keeps its value and says so in the log. */
Test(ops_systemd, sighup_reloads_the_file, .init = mk_tmp, .fini = rm_tmp, .timeout = 60)
{
    char conf[128];
    struct kvt_kvd k;
    snprintf(conf, sizeof(conf), "%s/kvd.conf", tmp);
    write_conf(conf, 5000, 30000, 256);
    const char *extra[] = {"-c", conf, NULL}; /* kvt also sets --heartbeat-ms 60000 */
    cr_assert_eq(ops_kvd_start(&k, extra), 0);
    cr_expect_eq(config_value(&k, "attach_timeout_ms"), 5000);
    cr_expect_eq(config_value(&k, "heartbeat_ms"), 60000);
    write_conf(conf, 6000, 1234, 300);
    cr_assert_eq(kill(k.pid, SIGHUP), 0);
    long end = kvt_now_ms() + 10000, v;
    while ((v = config_value(&k, "attach_timeout_ms")) != 6000 && kvt_now_ms() < end)
        usleep(20000);
    cr_expect_eq(v, 6000, "attach_timeout_ms was not reloaded");
    cr_expect_eq(config_value(&k, "heartbeat_ms"), 60000, "the command line must win");
    cr_expect_eq(config_value(&k, "max_clients"), 256, "max_clients needs a restart");
    /* a broken file changes nothing and kvd keeps serving */
    FILE *f = fopen(conf, "w");
    cr_assert_not_null(f);
    fputs("[kvd]\nno_such_key = 1\n", f);
    fclose(f);
    cr_assert_eq(kill(k.pid, SIGHUP), 0);
    usleep(200000);
    cr_expect_eq(config_value(&k, "attach_timeout_ms"), 6000);
    char log[65536] = "";
    FILE *lf = fopen(k.log_path, "r");
    cr_assert_not_null(lf);
    size_t n = fread(log, 1, sizeof(log) - 1, lf);
    fclose(lf);
    log[n] = '\0';
    cr_expect(strstr(log, "'max_clients' changed; it takes effect at the next start") != NULL, "%s",
              log);
    cr_expect(strstr(log, "keeping the running configuration") != NULL, "%s", log);
    kvt_kvd_cleanup(&k);
}
