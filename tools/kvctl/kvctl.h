/*
 * kvctl.h - kvctl's internals: the connection to kvd, output helpers (aligned tables for people,
 * json-c objects for --json) and the commands. Each command fetches, builds one json_object, and
 * prints it either as JSON or as text; the text is rendered from the same data.
 */
#ifndef KVCTL_H
#define KVCTL_H

#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>

#include "kvclient.h"
#include "proto.h"

/* Exit codes (documented in kvctl(1)). */
enum {
    KVCTL_OK = 0,
    KVCTL_EFAIL = 1,    /* kvd answered with an error, or the operation failed */
    KVCTL_EUSAGE = 2,   /* bad command line */
    KVCTL_ECONNECT = 3, /* kvd is not running or does not answer */
    KVCTL_EPERM = 4,    /* kvd refused: not in the client group, or not an admin */
    KVCTL_ENOENT = 5,   /* no such hash */
};

struct kvctl {
    struct kvc *c;
    const char *run_dir;
    int json;
    int timeout_ms;
    const char *ns;    /* --ns: namespace of a hash (show, evict) */
    long iterations;   /* top: refreshes, <= 0 until q */
    double interval_s; /* top */
    uint8_t *buf;      /* reply buffer, KVCTL_BUF bytes */
};
#define KVCTL_BUF (4u << 20)

/* Map a libkvclient error to an exit code, printing a one-line reason to stderr. */
int kvctl_fail(const char *what, int err);
/* Run one admin sub-command; reply body in k->buf. 0 or an exit code (message printed). */
int kvctl_admin(struct kvctl *k, uint32_t sub, const void *arg, size_t arg_len, size_t *len,
                uint32_t *count);

/* ---- commands (kvctl_cmd.c); argv holds the command's own arguments ---- */
int kvctl_cmd_clients(struct kvctl *k, int argc, char **argv);
int kvctl_cmd_ls(struct kvctl *k, int argc, char **argv);
int kvctl_cmd_show(struct kvctl *k, int argc, char **argv);
int kvctl_cmd_pages(struct kvctl *k, int argc, char **argv);
int kvctl_cmd_evict(struct kvctl *k, int argc, char **argv);
int kvctl_cmd_policy(struct kvctl *k, int argc, char **argv);
int kvctl_cmd_spill(struct kvctl *k, int argc, char **argv);
int kvctl_cmd_config(struct kvctl *k, int argc, char **argv);
/* The clients table as `clients` prints it (also used by top). */
int kvctl_clients_table(struct kvctl *k);

/* ---- output (kvctl_out.c) ---- */
struct kvctl_table;
/* A table with ncols columns; headers are copied. Columns whose header starts with '>' are
 * right-aligned (numbers); the '>' is not printed. */
struct kvctl_table *kvctl_table_new(int ncols, const char *const *headers);
/* Add a row: ncols printf-formatted cells given as strings. */
void kvctl_table_row(struct kvctl_table *t, const char *const *cells);
void kvctl_table_print(struct kvctl_table *t);
void kvctl_table_free(struct kvctl_table *t);

/* "1.5 GiB" style sizes and "3m12s" durations into buf. */
const char *kvctl_bytes(char *buf, size_t cap, uint64_t bytes);
const char *kvctl_dur(char *buf, size_t cap, uint64_t ms);
/* 32 hex characters of a hash into buf (>= 33 bytes). */
const char *kvctl_hex(char *buf, const uint8_t *hash);
/* Parse 32 hex characters. 0 or -EINVAL. */
int kvctl_parse_hash(const char *s, uint8_t *hash);
/* Format name ("fp8_e4m3"), "?" for unknown ids. */
const char *kvctl_fmt(int fmt);
const char *kvctl_tier(int tier);

/* json-c shorthands */
void kvctl_jset(json_object *o, const char *key, json_object *v);
json_object *kvctl_ju(uint64_t v);
json_object *kvctl_jstr(const char *s);
json_object *kvctl_jnum(double v); /* null for NaN */
/* Print o as pretty JSON on stdout and drop the reference. */
void kvctl_jprint(json_object *o);

#endif
