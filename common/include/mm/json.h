/*
 * Request-body decoding with typed field helpers. Pure functions (no h2o):
 * they describe what is wrong in an mm_problem_t, which the HTTP layer turns
 * into the SPEC's error shape with mm_reply_problem(). Unknown fields are
 * ignored; a wrong type or out-of-range value is `400 invalid_field` and the
 * message names the field.
 */
#ifndef MM_JSON_H
#define MM_JSON_H

#include <jansson.h>
#include <stdint.h>
#include "mm/base.h"

#define MM_BODY_MAX (64 * 1024)

typedef struct mm_problem {
    int status;       /* HTTP status, e.g. 400 */
    const char *code; /* static snake_case code, e.g. "invalid_field" */
    char message[256];
} mm_problem_t;

void mm_problem_set(mm_problem_t *p, int status, const char *code, const char *fmt, ...) MM_PRINTF(4, 5);

/* Builds {"error":{"code","message"}}; returns a new reference. */
json_t *mm_error_body(const char *code, const char *message);

/* Decodes a request body into a JSON object. An empty body (len 0) gives an
 * empty object. Not JSON, not UTF-8, or not an object: 400 invalid_json.
 * Returns 0 with a new reference in *out, or -EINVAL with `p` filled. */
int mm_json_decode_object(const char *body, size_t len, json_t **out, mm_problem_t *p);

/* Field flags. */
#define MM_FIELD_REQUIRED 0x1 /* absent is 400 invalid_field */
#define MM_FIELD_NULLABLE 0x2 /* JSON null reads as absent */

/* A string field of at most `maxlen` bytes. Absent (and allowed): *out = NULL,
 * *len = 0. The string stays owned by `obj`. Returns 0 or -EINVAL. */
int mm_json_get_string(json_t *obj, const char *name, int flags, size_t maxlen, const char **out, size_t *len, mm_problem_t *p);
/* An integer field within [min, max]. Absent (and allowed): *out = def. */
int mm_json_get_int(json_t *obj, const char *name, int flags, int64_t min, int64_t max, int64_t def, int64_t *out, mm_problem_t *p);
/* An array field of at most `maxitems` items. Absent (and allowed): *out = NULL. */
int mm_json_get_array(json_t *obj, const char *name, int flags, size_t maxitems, json_t **out, mm_problem_t *p);

#endif
