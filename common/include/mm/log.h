/*
 * JSON-lines logging on stderr: {"ts","level","service","msg", ...fields}.
 * Thread-safe (one write(2) per line). Fields from a request (request_id,
 * peer_id) are passed explicitly, not kept in globals.
 */
#ifndef MM_LOG_H
#define MM_LOG_H

#include <jansson.h>
#include "mm/base.h"

typedef enum mm_log_level { MM_LOG_DEBUG, MM_LOG_INFO, MM_LOG_WARN, MM_LOG_ERROR } mm_log_level_t;

/* Sets the service name and the minimum level ("debug", "info", "warn", "error"). */
void mm_log_init(const char *service, const char *level);

void mm_log(mm_log_level_t level, const char *fmt, ...) MM_PRINTF(2, 3);
/* Like mm_log with extra fields; steals the reference to `fields` (may be NULL). */
void mm_logj(mm_log_level_t level, json_t *fields, const char *fmt, ...) MM_PRINTF(3, 4);

#define mm_debug(...) mm_log(MM_LOG_DEBUG, __VA_ARGS__)
#define mm_info(...) mm_log(MM_LOG_INFO, __VA_ARGS__)
#define mm_warn(...) mm_log(MM_LOG_WARN, __VA_ARGS__)
#define mm_error(...) mm_log(MM_LOG_ERROR, __VA_ARGS__)

/* Writes an already-built JSON object as one log line (adds ts/service if absent); steals `obj`. */
void mm_log_json(json_t *obj);

/* Per thread: with `on`, this thread's info and debug lines are collected
 * and written by mm_log_flush() (warnings and errors are written at once,
 * after what was collected). The HTTP server turns it on for its loop
 * threads and flushes after every loop iteration. Off flushes. */
void mm_log_buffer(int on);
void mm_log_flush(void);

#endif
