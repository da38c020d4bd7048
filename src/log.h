/*
 * log: leveled, one-line, key=value logs on stderr.
 *
 * A line looks like `ts=2026-11-25T20:00:00.123Z level=info msg="listening" url=tcp://...`.
 * Callers write the key=value tail themselves with the usual printf format.
 * The level is set at start-up (log_set_level) and may change at any time
 * after (SIGHUP reloads log.level): every thread may log meanwhile.
 */
#ifndef GIM_LOG_H
#define GIM_LOG_H

enum log_level { LOG_LEVEL_DEBUG = 0, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR };

void log_set_level(enum log_level lvl);
int log_enabled(enum log_level lvl);
/* Parses "debug"/"info"/"warn"/"error"; returns -1 on anything else. */
int log_level_parse(const char *s);
void log_write(enum log_level lvl, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_debug(msg, ...)                                                                        \
    do {                                                                                           \
        if (log_enabled(LOG_LEVEL_DEBUG))                                                          \
            log_write(LOG_LEVEL_DEBUG, msg, __VA_ARGS__);                                          \
    } while (0)
#define log_info(msg, ...)  log_write(LOG_LEVEL_INFO, msg, __VA_ARGS__)
#define log_warn(msg, ...)  log_write(LOG_LEVEL_WARN, msg, __VA_ARGS__)
#define log_error(msg, ...) log_write(LOG_LEVEL_ERROR, msg, __VA_ARGS__)

#endif
