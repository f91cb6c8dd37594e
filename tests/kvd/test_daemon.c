/*
 * test_daemon.c - the kvd binary as an operator meets it: a second kvd on the same run directory
 * refuses to start (a second ZeroMQ bind on an ipc path would silently steal it), bad
 * configuration is a clear error with exit status 2, and --print-config shows the effective
 * values (default < file < command line).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kvt.h"

/* Run kvd with argv (NULL-terminated, after the binary), capture stdout+stderr; exit status. */
static int run_kvd(const char *const *argv, char *out, size_t cap)
{
    int pipefd[2];
    cr_assert_eq(pipe(pipefd), 0);
    pid_t pid = fork();
    if (pid == 0) {
        const char *av[32] = {getenv("KVT_KVD")};
        for (int i = 0; argv[i] && i < 30; i++)
            av[i + 1] = argv[i];
        dup2(pipefd[1], 1);
        dup2(pipefd[1], 2);
        execv(av[0], (char *const *)av);
        _exit(127);
    }
    close(pipefd[1]);
    size_t n = 0;
    ssize_t r;
    while (n + 1 < cap && (r = read(pipefd[0], out + n, cap - 1 - n)) > 0)
        n += (size_t)r;
    out[n] = '\0';
    close(pipefd[0]);
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

Test(daemon, second_kvd_on_the_same_run_dir_refuses, .timeout = 60)
{
    struct kvt_kvd k;
    char out[4096];
    cr_assert_eq(kvt_kvd_start(&k, NULL), 0);
    int st = run_kvd((const char *[]){"--run-dir", k.run_dir, "--state-dir", k.state_dir,
                                      "--arena-size", "8M", NULL},
                     out, sizeof(out));
    cr_assert_eq(st, 1, "second kvd exited %d: %s", st, out);
    cr_assert_not_null(strstr(out, "refusing to start"), "%s", out);
    /* the first one still serves */
    struct kvc *c;
    cr_assert_eq(kvt_open(&k, "still-there", &c), 0);
    cr_assert_eq(kvc_ping(c), 0);
    kvc_close(c);
    kvt_kvd_cleanup(&k);
}

Test(daemon, bad_configuration_is_a_clear_error)
{
    char out[4096];
    char path[] = "/tmp/kvd-badconf-XXXXXX";
    int fd = mkstemp(path);
    const char *text = "[kvd]\narena_size = a lot\n";
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    cr_assert_eq(run_kvd((const char *[]){"-c", path, NULL}, out, sizeof(out)), 2);
    cr_assert_not_null(strstr(out, "bad value"), "%s", out);
    cr_assert_eq(run_kvd((const char *[]){"--set", "no_such_key=1", NULL}, out, sizeof(out)), 2);
    cr_assert_not_null(strstr(out, "unknown key"), "%s", out);
    cr_assert_eq(run_kvd((const char *[]){"--policy", "nonsense", "--run-dir", "/tmp/x-kvd-none",
                                          "--print-config", NULL},
                         out, sizeof(out)),
                 0, "print-config does not validate policies: %s", out);
    cr_assert_eq(run_kvd((const char *[]){"--bogus-flag", NULL}, out, sizeof(out)), 2);
    unlink(path);
}

Test(daemon, print_config_shows_precedence)
{
    char out[8192];
    char path[] = "/tmp/kvd-conf-XXXXXX";
    int fd = mkstemp(path);
    const char *text = "[kvd]\narena_size = 1G\nchunk_size = 8M\n";
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    cr_assert_eq(run_kvd((const char *[]){"-c", path, "--chunk-size", "2M", "--print-config", NULL},
                         out, sizeof(out)),
                 0);
    cr_assert_not_null(strstr(out, "arena_size = 1073741824"), "file value: %s", out);
    cr_assert_not_null(strstr(out, "chunk_size = 2097152"), "command line wins: %s", out);
    cr_assert_not_null(strstr(out, "policy = lru"), "default: %s", out);
    unlink(path);
}
