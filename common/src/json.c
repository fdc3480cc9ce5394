/*
 * Request-body decoding and typed field access; see mm/json.h.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include "mm/json.h"

void mm_problem_set(mm_problem_t *p, int status, const char *code, const char *fmt, ...)
{
    va_list ap;

    if (p == NULL)
        return;
    p->status = status;
    p->code = code;
    va_start(ap, fmt);
    vsnprintf(p->message, sizeof(p->message), fmt, ap);
    va_end(ap);
}

json_t *mm_error_body(const char *code, const char *message)
{
    json_t *msg = json_string(message);

    /* a message quoting invalid UTF-8 from the client must not break the body */
    if (msg == NULL)
        msg = json_string("(message not representable)");
    return json_pack("{s:{s:s,s:o}}", "error", "code", code, "message", msg);
}

int mm_json_decode_object(const char *body, size_t len, json_t **out, mm_problem_t *p)
{
    json_error_t jerr;
    json_t *obj;

    if (len == 0) {
        *out = json_object();
        return 0;
    }
    if ((obj = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr)) == NULL) {
        mm_problem_set(p, 400, "invalid_json", "the body is not valid JSON (line %d, column %d: %s)", jerr.line, jerr.column,
                       jerr.text);
        return -EINVAL;
    }
    if (!json_is_object(obj)) {
        json_decref(obj);
        mm_problem_set(p, 400, "invalid_json", "the body must be a JSON object");
        return -EINVAL;
    }
    *out = obj;
    return 0;
}

/* Looks the field up; 1 when present (and not a permitted null), 0 when absent,
 * -EINVAL when required and absent. */
static int mm__field(json_t *obj, const char *name, int flags, json_t **v, mm_problem_t *p)
{
    *v = json_object_get(obj, name);
    if (*v != NULL && json_is_null(*v) && (flags & MM_FIELD_NULLABLE) != 0)
        *v = NULL;
    if (*v != NULL)
        return 1;
    if ((flags & MM_FIELD_REQUIRED) != 0) {
        mm_problem_set(p, 400, "invalid_field", "field '%s' is required", name);
        return -EINVAL;
    }
    return 0;
}

int mm_json_get_string(json_t *obj, const char *name, int flags, size_t maxlen, const char **out, size_t *len, mm_problem_t *p)
{
    json_t *v;
    int r;

    *out = NULL;
    if (len != NULL)
        *len = 0;
    if ((r = mm__field(obj, name, flags, &v, p)) <= 0)
        return r;
    if (!json_is_string(v)) {
        mm_problem_set(p, 400, "invalid_field", "field '%s' must be a string", name);
        return -EINVAL;
    }
    if (json_string_length(v) > maxlen) {
        mm_problem_set(p, 400, "invalid_field", "field '%s' is longer than %zu bytes", name, maxlen);
        return -EINVAL;
    }
    if (memchr(json_string_value(v), '\0', json_string_length(v)) != NULL) {
        mm_problem_set(p, 400, "invalid_field", "field '%s' must not contain NUL characters", name);
        return -EINVAL;
    }
    *out = json_string_value(v);
    if (len != NULL)
        *len = json_string_length(v);
    return 0;
}

int mm_json_get_int(json_t *obj, const char *name, int flags, int64_t min, int64_t max, int64_t def, int64_t *out, mm_problem_t *p)
{
    json_t *v;
    int r;

    *out = def;
    if ((r = mm__field(obj, name, flags, &v, p)) <= 0)
        return r;
    if (!json_is_integer(v)) {
        mm_problem_set(p, 400, "invalid_field", "field '%s' must be an integer", name);
        return -EINVAL;
    }
    if (json_integer_value(v) < min || json_integer_value(v) > max) {
        mm_problem_set(p, 400, "invalid_field", "field '%s' must be from %lld to %lld", name, (long long)min, (long long)max);
        return -EINVAL;
    }
    *out = json_integer_value(v);
    return 0;
}

int mm_json_get_array(json_t *obj, const char *name, int flags, size_t maxitems, json_t **out, mm_problem_t *p)
{
    json_t *v;
    int r;

    *out = NULL;
    if ((r = mm__field(obj, name, flags, &v, p)) <= 0)
        return r;
    if (!json_is_array(v)) {
        mm_problem_set(p, 400, "invalid_field", "field '%s' must be an array", name);
        return -EINVAL;
    }
    if (json_array_size(v) > maxitems) {
        mm_problem_set(p, 400, "invalid_field", "field '%s' has more than %zu entries", name, maxitems);
        return -EINVAL;
    }
    *out = v;
    return 0;
}
