/*
 * JSON-lines logging. Each line is built with jansson and written with a
 * single write(2), so lines from several threads never interleave.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include "mm/log.h"

static const char *mm__log_service = "mm";
static mm_log_level_t mm__log_min = MM_LOG_INFO;
static const char *const mm__level_names[] = {"debug", "info", "warn", "error"};

void mm_log_init(const char *service, const char *level)
{
    size_t i;

    mm__log_service = service;
    if (level == NULL)
        return;
    for (i = 0; i != MM_ARRAY_SIZE(mm__level_names); ++i)
        if (strcmp(level, mm__level_names[i]) == 0)
            mm__log_min = (mm_log_level_t)i;
}

static void mm__log_timestamp(char *buf, size_t size)
{
    struct timeval tv;
    struct tm tm;
    size_t n;

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    n = strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, size - n, ".%03dZ", (int)(tv.tv_usec / 1000));
}

/* A loop thread may collect its lines and write them once per loop
 * iteration (mm_log_buffer): a busy gateway logs a line per request, and a
 * write(2) each would be a good part of its CPU. */
static __thread struct {
    char *buf;
    size_t len, cap;
    int on;
} mm__tl;

static void mm__write_all(const char *p, size_t len)
{
    size_t off = 0;

    while (off < len) {
        ssize_t w = write(STDERR_FILENO, p + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
}

void mm_log_flush(void)
{
    if (mm__tl.len == 0)
        return;
    mm__write_all(mm__tl.buf, mm__tl.len);
    mm__tl.len = 0;
}

void mm_log_buffer(int on)
{
    if (!on) {
        mm_log_flush();
        free(mm__tl.buf);
        mm__tl.buf = NULL;
        mm__tl.cap = 0;
    }
    mm__tl.on = on;
}

static void mm__log_write(json_t *obj, int urgent)
{
    char *line = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    size_t len;

    if (line == NULL)
        return;
    len = strlen(line);
    line[len++] = '\n'; /* replaces the NUL: written by length */
    if (mm__tl.on && !urgent) {
        if (mm__tl.len + len > mm__tl.cap) {
            mm_log_flush();
            if (len > mm__tl.cap) {
                mm__tl.cap = len > 65536 ? len : 65536;
                mm__tl.buf = realloc(mm__tl.buf, mm__tl.cap);
                if (mm__tl.buf == NULL) { /* no memory for the buffer: write through */
                    mm__tl.cap = 0;
                    mm__write_all(line, len);
                    free(line);
                    return;
                }
            }
        }
        memcpy(mm__tl.buf + mm__tl.len, line, len);
        mm__tl.len += len;
    } else {
        mm_log_flush(); /* keep the order */
        mm__write_all(line, len);
    }
    free(line);
}

void mm_log_json(json_t *obj)
{
    char ts[40];
    json_t *line;

    if (!json_is_object(obj)) {
        json_decref(obj);
        return;
    }
    /* ts, level, service first, whatever the caller's order */
    mm__log_timestamp(ts, sizeof(ts));
    line = json_pack("{s:s,s:s,s:s}", "ts", ts, "level", "info", "service", mm__log_service);
    json_object_update(line, obj);
    json_decref(obj);
    mm__log_write(line, 0);
    json_decref(line);
}

/* A JSON string of `msg`; bytes that are not valid UTF-8 (say, from a
 * client) become '?' so the line stays valid JSON. */
static json_t *mm__log_string(char *msg)
{
    json_t *s = json_string(msg);
    char *p;

    if (s != NULL)
        return s;
    for (p = msg; *p != '\0'; ++p)
        if ((unsigned char)*p >= 0x80)
            *p = '?';
    return json_string(msg);
}

static MM_PRINTF(3, 0) void mm__vlog(mm_log_level_t level, json_t *fields, const char *fmt, va_list ap)
{
    char ts[40], msg[2048];
    json_t *obj;

    if (level < mm__log_min) {
        json_decref(fields);
        return;
    }
    vsnprintf(msg, sizeof(msg), fmt, ap);
    mm__log_timestamp(ts, sizeof(ts));
    obj = json_object();
    json_object_set_new(obj, "ts", json_string(ts));
    json_object_set_new(obj, "level", json_string(mm__level_names[level]));
    json_object_set_new(obj, "service", json_string(mm__log_service));
    json_object_set_new(obj, "msg", mm__log_string(msg));
    if (fields != NULL) {
        json_object_update(obj, fields);
        json_decref(fields);
    }
    mm__log_write(obj, level >= MM_LOG_WARN);
    json_decref(obj);
}

void mm_log(mm_log_level_t level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    mm__vlog(level, NULL, fmt, ap);
    va_end(ap);
}

void mm_logj(mm_log_level_t level, json_t *fields, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    mm__vlog(level, fields, fmt, ap);
    va_end(ap);
}
