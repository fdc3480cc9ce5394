/*
 * The gateway's API over libcurl: one easy handle per agent_api_t, kept
 * for its whole life so that requests reuse the connection (HTTP/2 when
 * the server offers it, else keep-alive HTTP/1.1). The client certificate
 * is the agent's; the server's is checked against the CA file when one is
 * configured, else against the system's store.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <curl/curl.h>
#include "agent.h"

#define AGENT_API_BODY_MAX (4 * 1024 * 1024)

struct agent_api {
    CURL *curl;
    char base[1024];
    long timeout_ms;
    struct curl_slist *json_hdrs;
    char errbuf[CURL_ERROR_SIZE];
    int (*abort_fn)(void *data);
    void *abort_data;
    /* the body of the answer being received */
    char *buf;
    size_t len, cap;
};

static size_t agent_api_on_data(char *data, size_t size, size_t nmemb, void *arg)
{
    agent_api_t *api = arg;
    size_t n = size * nmemb;

    if (api->len + n > AGENT_API_BODY_MAX)
        return 0; /* makes curl fail the transfer */
    if (api->len + n + 1 > api->cap) {
        api->cap = (api->len + n + 1) * 2;
        api->buf = mm_xrealloc(api->buf, api->cap);
    }
    memcpy(api->buf + api->len, data, n);
    api->len += n;
    api->buf[api->len] = '\0';
    return n;
}

static int agent_api_on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
    agent_api_t *api = arg;

    return api->abort_fn != NULL && api->abort_fn(api->abort_data);
}

void agent_api_set_abort(agent_api_t *api, int (*fn)(void *data), void *data)
{
    api->abort_fn = fn;
    api->abort_data = data;
}

agent_api_t *agent_api_new(const agent_conf_t *conf, agent_err_t *err)
{
    agent_api_t *api = mm_xcalloc(1, sizeof(*api));

    if ((api->curl = curl_easy_init()) == NULL) {
        agent_err_set(err, "internal", "libcurl failed to initialise");
        free(api);
        return NULL;
    }
    snprintf(api->base, sizeof(api->base), "%s", conf->server);
    api->timeout_ms = 15000;
    api->json_hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    api->json_hdrs = curl_slist_append(api->json_hdrs, "Accept: application/json");
    curl_easy_setopt(api->curl, CURLOPT_NOSIGNAL, 1L); /* used from threads */
    curl_easy_setopt(api->curl, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(api->curl, CURLOPT_SSLCERT, conf->paths.cert);
    curl_easy_setopt(api->curl, CURLOPT_SSLCERTTYPE, "PEM");
    curl_easy_setopt(api->curl, CURLOPT_SSLKEY, conf->paths.key);
    curl_easy_setopt(api->curl, CURLOPT_SSLKEYTYPE, "PEM");
    if (conf->ca_file[0] != '\0')
        curl_easy_setopt(api->curl, CURLOPT_CAINFO, conf->ca_file);
    curl_easy_setopt(api->curl, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    curl_easy_setopt(api->curl, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(api->curl, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(api->curl, CURLOPT_USERAGENT, "mm/" MM_VERSION);
    curl_easy_setopt(api->curl, CURLOPT_ERRORBUFFER, api->errbuf);
    curl_easy_setopt(api->curl, CURLOPT_WRITEFUNCTION, agent_api_on_data);
    curl_easy_setopt(api->curl, CURLOPT_WRITEDATA, api);
    curl_easy_setopt(api->curl, CURLOPT_HTTPHEADER, api->json_hdrs);
    curl_easy_setopt(api->curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(api->curl, CURLOPT_XFERINFOFUNCTION, agent_api_on_progress);
    curl_easy_setopt(api->curl, CURLOPT_XFERINFODATA, api);
    return api;
}

void agent_api_free(agent_api_t *api)
{
    if (api == NULL)
        return;
    curl_easy_cleanup(api->curl);
    curl_slist_free_all(api->json_hdrs);
    free(api->buf);
    free(api);
}

void agent_api_set_timeout(agent_api_t *api, long ms)
{
    api->timeout_ms = ms;
}

char *agent_api_escape(const char *s)
{
    char *e = curl_easy_escape(NULL, s, 0), *out = mm_xstrdup(e != NULL ? e : "");

    curl_free(e);
    return out;
}

/* The message for a request that got no HTTP answer. */
static void agent_api_transport_error(agent_api_t *api, CURLcode rc, agent_err_t *err)
{
    const char *why = api->errbuf[0] != '\0' ? api->errbuf : curl_easy_strerror(rc);

    switch (rc) {
    case CURLE_PEER_FAILED_VERIFICATION:
#if LIBCURL_VERSION_NUM < 0x073e00
    case CURLE_SSL_CACERT:
#endif
    case CURLE_SSL_CACERT_BADFILE:
        agent_err_set(err, "server_untrusted",
                      "the server at %s is not trusted (%s): pin the CA that signed its certificate with "
                      "mm init --server-ca FILE --force, or set MM_CA_FILE",
                      api->base, why);
        return;
    case CURLE_SSL_CERTPROBLEM:
        agent_err_set(err, "bad_identity",
                      "cannot use this agent's certificate or key (%s): make a new identity with mm init --force", why);
        return;
    case CURLE_ABORTED_BY_CALLBACK:
        agent_err_set(err, "cancelled", "the request to %s was cancelled", api->base);
        return;
    default:
        agent_err_set(err, "server_unreachable",
                      "cannot reach the server at %s (%s): check that it runs and that the URL is right (--server, MM_SERVER)",
                      api->base, why);
        return;
    }
}

int agent_api_call(agent_api_t *api, const char *method, const char *path, json_t *body, agent_reply_t *reply, agent_err_t *err)
{
    char url[2048];
    char *text = NULL;
    curl_off_t retry_after = 0;
    CURLcode rc;
    json_t *err_obj;

    memset(reply, 0, sizeof(*reply));
    snprintf(url, sizeof(url), "%s%s", api->base, path);
    api->len = 0;
    api->errbuf[0] = '\0';
    curl_easy_setopt(api->curl, CURLOPT_URL, url);
    curl_easy_setopt(api->curl, CURLOPT_TIMEOUT_MS, api->timeout_ms);
    if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(api->curl, CURLOPT_HTTPGET, 1L);
    } else {
        text = body != NULL ? json_dumps(body, JSON_COMPACT) : mm_xstrdup("{}");
        curl_easy_setopt(api->curl, CURLOPT_POST, 1L);
        curl_easy_setopt(api->curl, CURLOPT_POSTFIELDS, text);
        curl_easy_setopt(api->curl, CURLOPT_POSTFIELDSIZE, (long)strlen(text));
    }
    curl_easy_setopt(api->curl, CURLOPT_CUSTOMREQUEST, strcmp(method, "GET") == 0 || strcmp(method, "POST") == 0 ? NULL : method);
    rc = curl_easy_perform(api->curl);
    free(text);
    curl_easy_setopt(api->curl, CURLOPT_POSTFIELDS, NULL);
    if (rc != CURLE_OK) {
        agent_api_transport_error(api, rc, err);
        return -1;
    }
    curl_easy_getinfo(api->curl, CURLINFO_RESPONSE_CODE, &reply->status);
    curl_easy_getinfo(api->curl, CURLINFO_RETRY_AFTER, &retry_after);
    reply->retry_after = (long)retry_after;
    if (api->len != 0)
        reply->body = json_loadb(api->buf, api->len, 0, NULL);
    if ((err_obj = json_object_get(reply->body, "error")) != NULL) {
        reply->error = json_string_value(json_object_get(err_obj, "code"));
        reply->message = json_string_value(json_object_get(err_obj, "message"));
    }
    if (reply->status >= 400 && reply->error == NULL) {
        reply->error = reply->status == 502 || reply->status == 503 || reply->status == 504 ? "unavailable" : "http_error";
        reply->message = "";
    }
    return 0;
}

double agent_api_last_rtt_ms(agent_api_t *api)
{
    curl_off_t total = 0, pre = 0;

    curl_easy_getinfo(api->curl, CURLINFO_TOTAL_TIME_T, &total);
    curl_easy_getinfo(api->curl, CURLINFO_PRETRANSFER_TIME_T, &pre);
    return total > pre ? (double)(total - pre) / 1000.0 : 0;
}

void agent_reply_clear(agent_reply_t *reply)
{
    json_decref(reply->body);
    memset(reply, 0, sizeof(*reply));
}

void agent_api_error(const agent_reply_t *r, agent_err_t *err)
{
    const char *code = r->error != NULL ? r->error : "http_error", *msg = r->message != NULL ? r->message : "";
    long after = r->retry_after > 0 ? r->retry_after : 1;

    if (strcmp(code, "not_registered") == 0)
        agent_err_set(err, code, "this identity is not registered yet: run mm register first");
    else if (strcmp(code, "email_taken") == 0)
        agent_err_set(err, code, "%s (another key holds this email): if it is yours, use the identity that registered it", msg);
    else if (strcmp(code, "certificate_has_no_email") == 0 || strncmp(code, "client_certificate_", 19) == 0)
        agent_err_set(err, code, "the server refused this agent's certificate: %s; make a new identity with mm init --force", msg);
    else if (strcmp(code, "rate_limited") == 0)
        agent_err_set(err, code, "the server is rate limiting this identity: retry in %ld s", after);
    else if (strcmp(code, "unavailable") == 0)
        agent_err_set(err, code, "the server is unavailable right now (HTTP %ld%s%s): retry in %ld s", r->status,
                      msg[0] != '\0' ? ": " : "", msg, after);
    else
        agent_err_set(err, code, "the server answered %ld %s%s%s", r->status, code, msg[0] != '\0' ? ": " : "", msg);
}

int agent_api_lookup(agent_api_t *api, const char *param, const char *value, json_t **peer, agent_err_t *err)
{
    char *esc = agent_api_escape(value), path[1024];
    agent_reply_t r;
    int ret = -1;

    snprintf(path, sizeof(path), "/api/relay/broadcast/lookup?%s=%s", param, esc);
    free(esc);
    if (agent_api_call(api, "GET", path, NULL, &r, err) != 0)
        return -1;
    if (r.status == 200 && json_is_object(r.body)) {
        *peer = json_incref(r.body);
        ret = 0;
    } else if (r.status == 404) {
        agent_err_set(err, "not_found", "%s is not online (unknown, or not broadcasting): ask them to run mm up", value);
    } else {
        agent_api_error(&r, err);
    }
    agent_reply_clear(&r);
    return ret;
}
