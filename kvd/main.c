/*
 * main.c - kvd: the KV-cache daemon. Parses the configuration (defaults < file < command line),
 * starts the server and runs its loop until SIGTERM.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "server.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: kvd [options]\n"
               "  -c, --config FILE      INI configuration (section [kvd]); see kvd.conf(5)\n"
               "      --run-dir DIR      sockets and lock (config run_dir)\n"
               "      --state-dir DIR    spill store (config state_dir)\n"
               "      --arena-size SIZE  bytes of pages, K/M/G suffixes (config arena_size)\n"
               "      --chunk-size SIZE  arena chunk size (config chunk_size)\n"
               "      --backend NAME     auto, host or cuda (config backend)\n"
               "      --policy NAME      eviction policy (config policy)\n"
               "      --heartbeat-ms N   heartbeat interval (config heartbeat_ms)\n"
               "      --client-group G   group allowed to attach (config client_group)\n"
               "      --log-level L      error..debug (config log_level)\n"
               "  -s, --set KEY=VALUE    set any configuration key\n"
               "      --foreground       accepted for compatibility; kvd never daemonizes itself\n"
               "      --print-config     print the effective configuration and exit\n"
               "  -h, --help\n");
}

int main(int argc, char **argv)
{
    static struct kvd d;
    static const struct option opts[] = {
        {"config", required_argument, 0, 'c'},
        {"run-dir", required_argument, 0, 1},
        {"state-dir", required_argument, 0, 2},
        {"arena-size", required_argument, 0, 3},
        {"chunk-size", required_argument, 0, 4},
        {"backend", required_argument, 0, 5},
        {"policy", required_argument, 0, 6},
        {"heartbeat-ms", required_argument, 0, 7},
        {"client-group", required_argument, 0, 8},
        {"log-level", required_argument, 0, 9},
        {"set", required_argument, 0, 's'},
        {"foreground", no_argument, 0, 10},
        {"print-config", no_argument, 0, 11},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    static const char *const keys[] = {
        [1] = "run_dir",      [2] = "state_dir",    [3] = "arena_size",
        [4] = "chunk_size",   [5] = "backend",      [6] = "policy",
        [7] = "heartbeat_ms", [8] = "client_group", [9] = "log_level",
    };
    const char *config_path = NULL;
    char err[256];
    int opt, print = 0, rc;

    /* the config file is read first, so that command-line options override it */
    for (int i = 1; i < argc - 1; i++)
        if (!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config"))
            config_path = argv[i + 1];
    kv_config_defaults(&d.cfg);
    if (config_path && kv_config_load(&d.cfg, config_path, err, sizeof(err)) != 0) {
        fprintf(stderr, "kvd: %s\n", err);
        return 2;
    }
    d.config_path = config_path; /* for SIGHUP (kvd_reload) */
    d.cfg_file = d.cfg;
    while ((opt = getopt_long(argc, argv, "c:s:h", opts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            break;
        case 's': {
            char *eq = strchr(optarg, '=');
            if (!eq) {
                fprintf(stderr, "kvd: --set wants KEY=VALUE, got '%s'\n", optarg);
                return 2;
            }
            *eq = '\0';
            if (kv_config_set(&d.cfg, optarg, eq + 1, err, sizeof(err)) != 0) {
                fprintf(stderr, "kvd: %s\n", err);
                return 2;
            }
            break;
        }
        case 10:
            break;
        case 11:
            print = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            if (opt >= 1 && opt <= 9) {
                if (kv_config_set(&d.cfg, keys[opt], optarg, err, sizeof(err)) != 0) {
                    fprintf(stderr, "kvd: %s\n", err);
                    return 2;
                }
                break;
            }
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "kvd: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    int level = kv_log_parse_level(d.cfg.log_level);
    if (level < 0) {
        fprintf(stderr, "kvd: unknown log_level '%s'\n", d.cfg.log_level);
        return 2;
    }
    kv_config_resolve_dirs(&d.cfg);
    if (print) {
        kv_config_print(&d.cfg, stdout, 0);
        return 0;
    }
    kv_log_init(level);
    rc = kvd_start(&d);
    if (rc == 0)
        rc = kvd_run(&d);
    kvd_stop(&d);
    return rc == 0 ? 0 : 1;
}
