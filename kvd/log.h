/* log.h - kvd's log: one line per event to stderr, with journald priority prefixes ("<3>") when
 * kvd runs under systemd (JOURNAL_STREAM set), else a timestamp and level word. */
#ifndef KVD_LOG_H
#define KVD_LOG_H

enum kv_log_level {
    KV_LOG_ERR = 3,
    KV_LOG_WARN = 4,
    KV_LOG_NOTICE = 5,
    KV_LOG_INFO = 6,
    KV_LOG_DEBUG = 7
};

void kv_log_init(int level);
int kv_log_parse_level(const char *s); /* level or -EINVAL */
void kv_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define kv_err(...)    kv_log(KV_LOG_ERR, __VA_ARGS__)
#define kv_warn(...)   kv_log(KV_LOG_WARN, __VA_ARGS__)
#define kv_notice(...) kv_log(KV_LOG_NOTICE, __VA_ARGS__)
#define kv_info(...)   kv_log(KV_LOG_INFO, __VA_ARGS__)
#define kv_debug(...)  kv_log(KV_LOG_DEBUG, __VA_ARGS__)

#endif
