/*
 * POST /register — binds the certificate's email to its key, first come,
 * first bound (SPEC §3.1).
 *
 * One statement does it: an upsert on peer_id that writes only when
 * something changed (a renewed certificate, a new display name), with the
 * `registered` event when it inserted, and the stored row when there was
 * nothing to write. Another key holding the email trips the unique index
 * (409). Running it again has no further effect, so a client may retry
 * after any failure.
 */
#include <errno.h>
#include <string.h>
#include "mm/identity.h"
#include "mm/log.h"
#include "trk.h"

/* A display name is up to 128 characters (code points), so up to 512 bytes of UTF-8. */
#define TRK_DISPLAY_NAME_CHARS 128
#define TRK_DISPLAY_NAME_BYTES (4 * TRK_DISPLAY_NAME_CHARS)

typedef struct trk_register_op {
    mm_async_t async;
    trk_thread_t *t;
    const char *params[4];
    char peer_id[65], email[MM_EMAIL_MAX + 1], fingerprint[65];
    char *display_name; /* NULL: keep the stored one */
    int retried;
} trk_register_op_t;

#define TRK_PEER_COLUMNS                                                                                                           \
    "peer_id, email, fingerprint, display_name, "                                                                                  \
    "to_char(registered_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"

static const char trk_sql_register[] =
    "WITH up AS ("
    " INSERT INTO peers (peer_id, email, fingerprint, display_name) VALUES ($1, $2, $3, $4)"
    " ON CONFLICT (peer_id) DO UPDATE SET email = EXCLUDED.email, fingerprint = EXCLUDED.fingerprint,"
    " display_name = coalesce(EXCLUDED.display_name, peers.display_name)"
    " WHERE (peers.email, peers.fingerprint) IS DISTINCT FROM (EXCLUDED.email, EXCLUDED.fingerprint)"
    " OR (EXCLUDED.display_name IS NOT NULL AND EXCLUDED.display_name IS DISTINCT FROM peers.display_name)"
    " RETURNING (xmax = 0) AS inserted, " TRK_PEER_COLUMNS "),"
    " ev AS (INSERT INTO peer_events (peer_id, kind, detail)"
    " SELECT peer_id, 'registered', jsonb_build_object('email', email, 'fingerprint', fingerprint) FROM up WHERE inserted)"
    "SELECT * FROM up"
    " UNION ALL SELECT false, " TRK_PEER_COLUMNS " FROM peers WHERE peer_id = $1 AND NOT EXISTS (SELECT 1 FROM up)";

static void trk_register_op_free(trk_register_op_t *op)
{
    free(op->display_name);
    mm_async_free(op);
}

static json_t *trk_peer_json(PGresult *res)
{
    return json_pack("{s:s,s:s,s:s,s:o,s:s}", "peer_id", PQgetvalue(res, 0, 1), "email", PQgetvalue(res, 0, 2), "fingerprint",
                     PQgetvalue(res, 0, 3), "display_name",
                     PQgetisnull(res, 0, 4) ? json_null() : json_string(PQgetvalue(res, 0, 4)), "registered_at",
                     PQgetvalue(res, 0, 5));
}

static void trk_register_on_row(mm_pg_status_t status, PGresult *res, void *data);

static int trk_register_send(trk_register_op_t *op)
{
    return mm_pg_query_static(op->t->pg, trk_sql_register, 4, op->params, trk_register_on_row, op);
}

static void trk_register_on_row(mm_pg_status_t status, PGresult *res, void *data)
{
    trk_register_op_t *op = data;
    h2o_req_t *req = mm_async_req(op);

    if (req == NULL)
        goto out;
    if (status == MM_PG_UNAVAILABLE) {
        mm_reply_unavailable(req, "PostgreSQL");
    } else if (status == MM_PG_ERROR) {
        if (strcmp(mm_pg_sqlstate(res), "23505") == 0) {
            mm_reply_error(req, 409, "email_taken", "another key has registered this email");
        } else {
            mm_error("register: %s", PQresultErrorMessage(res));
            mm_reply_error(req, 500, "internal", "the registration failed; it was not stored");
        }
    } else if (PQntuples(res) == 1) {
        mm_reply_json(req, strcmp(PQgetvalue(res, 0, 0), "t") == 0 ? 201 : 200, trk_peer_json(res));
    } else if (!op->retried) {
        /* The same key registering twice at once: the other statement's row is newer than our
         * snapshot. Once more, and it is visible. */
        op->retried = 1;
        if (trk_register_send(op) == 0)
            return;
        mm_reply_unavailable(req, "PostgreSQL");
    } else {
        mm_error("register: no row for %s", op->peer_id);
        mm_reply_error(req, 500, "internal", "the registration failed; retry");
    }
out:
    trk_register_op_free(op);
}

/* A display name is shown to people: at most 128 characters (jansson has
 * already checked the UTF-8), no control characters. */
static int trk_display_name_ok(const char *s, size_t len)
{
    size_t i, chars = 0;

    for (i = 0; i != len; ++i) {
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return 0;
        if (((unsigned char)s[i] & 0xc0) != 0x80) /* not a continuation byte */
            ++chars;
    }
    return chars <= TRK_DISPLAY_NAME_CHARS;
}

void trk_register(h2o_req_t *req, mm_thread_t *thread)
{
    trk_thread_t *t = thread->user;
    trk_register_op_t *op;
    mm_peer_t peer;
    mm_problem_t p;
    json_t *body = NULL;
    const char *email, *name;
    size_t email_len, name_len;
    char normalized[MM_EMAIL_MAX + 1];

    if (mm_req_peer(req, &peer) != 0 || mm_req_json(req, &body) != 0)
        return;
    if (mm_json_get_string(body, "email", MM_FIELD_NULLABLE, MM_EMAIL_MAX + 64, &email, &email_len, &p) != 0 ||
        mm_json_get_string(body, "display_name", MM_FIELD_NULLABLE, TRK_DISPLAY_NAME_BYTES, &name, &name_len, &p) != 0) {
        mm_reply_problem(req, &p);
        goto out;
    }
    if (name != NULL && !trk_display_name_ok(name, name_len)) {
        mm_reply_error(req, 400, "invalid_field",
                       "field 'display_name' must be at most 128 characters, without control characters");
        goto out;
    }
    if (peer.email[0] == '\0') {
        mm_reply_error(req, 400, "certificate_has_no_email",
                       "the client certificate carries no valid email: put it in subjectAltName (email:you@example.com)");
        goto out;
    }
    if (email != NULL) {
        if (mm_email_normalize(email, email_len, normalized) != 0) {
            mm_reply_error(req, 400, "invalid_field", "field 'email' is not a valid email address");
            goto out;
        }
        if (strcmp(normalized, peer.email) != 0) {
            mm_reply_error(req, 400, "email_mismatch", "the body says %s but the certificate says %s", normalized, peer.email);
            goto out;
        }
    }
    op = mm_async_new(req, sizeof(*op));
    op->t = t;
    memcpy(op->peer_id, peer.peer_id, sizeof(op->peer_id));
    memcpy(op->email, peer.email, sizeof(op->email));
    memcpy(op->fingerprint, peer.fingerprint, sizeof(op->fingerprint));
    op->display_name = name != NULL ? mm_xstrndup(name, name_len) : NULL;
    op->params[0] = op->peer_id;
    op->params[1] = op->email;
    op->params[2] = op->fingerprint;
    op->params[3] = op->display_name;
    if (trk_register_send(op) != 0) {
        mm_reply_unavailable(req, "PostgreSQL");
        trk_register_op_free(op);
    }
out:
    json_decref(body);
}
