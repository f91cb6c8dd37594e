/* Unit tests for the configuration: defaults, INI files through inih, bad input. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

static char *write_tmp(const char *text)
{
    static char path[64];
    strcpy(path, "/tmp/kvd-config-XXXXXX");
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

Test(config, defaults_are_documented_values)
{
    struct kv_config c;
    kv_config_defaults(&c);
    cr_assert_eq(c.arena_size, 256ull << 20);
    cr_assert_eq(c.chunk_size, 4ull << 20);
    cr_assert_str_eq(c.policy, "lru");
    cr_assert_str_eq(c.backend, "auto");
    cr_assert_eq(c.socket_mode, 0660);
    cr_assert_eq(c.fault_injection, 0);
}

Test(config, file_values_and_sizes)
{
    struct kv_config c;
    char err[256];
    char *p = write_tmp("; comment\n[kvd]\narena_size = 1G\nchunk_size=2MiB\npolicy = lru\n"
                        "fault_injection = yes\nsocket_mode = 0600\n");
    kv_config_defaults(&c);
    cr_assert_eq(kv_config_load(&c, p, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(c.arena_size, 1ull << 30);
    cr_assert_eq(c.chunk_size, 2ull << 20);
    cr_assert_eq(c.fault_injection, 1);
    cr_assert_eq(c.socket_mode, 0600);
    unlink(p);
}

Test(config, bad_input_is_a_clear_error)
{
    struct kv_config c;
    char err[256];
    struct {
        const char *text, *want;
    } cases[] = {
        {"[kvd]\nno_such_key = 1\n", "unknown key"},
        {"[kvd]\narena_size = lots\n", "bad value"},
        {"[kvd]\narena_size = -5M\n", "bad value"},
        {"[other]\nx = 1\n", "unknown section"},
        {"[kvd]\nfault_injection = maybe\n", "bad value"},
        {"[kvd\narena_size=1\n", ":1:"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *p = write_tmp(cases[i].text);
        kv_config_defaults(&c);
        err[0] = '\0';
        cr_assert_neq(kv_config_load(&c, p, err, sizeof(err)), 0, "case %zu accepted", i);
        cr_assert_not_null(strstr(err, cases[i].want), "case %zu: '%s'", i, err);
        unlink(p);
    }
    cr_assert_eq(kv_config_load(&c, "/nonexistent/kvd.conf", err, sizeof(err)), -ENOENT);
}

Test(config, print_round_trips)
{
    struct kv_config a, b;
    char err[256];
    kv_config_defaults(&a);
    kv_config_set(&a, "arena_size", "96M", err, sizeof(err));
    kv_config_set(&a, "client_group", "kvd", err, sizeof(err));
    char path[] = "/tmp/kvd-print-XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");
    kv_config_print(&a, f, 1);
    fclose(f);
    kv_config_defaults(&b);
    cr_assert_eq(kv_config_load(&b, path, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(memcmp(&a, &b, sizeof(a)), 0, "printed config parses back to the same values");
    unlink(path);
}
