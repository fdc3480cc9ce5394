"""The gateway as the suite's front door (SPEC §2, §3, §6): routing, the
one error shape, identity headers a client cannot forge, body limits, rate
limiting, the PROXY protocol and its internal listener."""

import re
import time

import pytest

import mm

REGISTER = "/api/relay/register"


# --- routing -------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/nope", "/", "/api/nope", "/api/relay/nope", "/api/relayx", "/apix/relay/register"])
@pytest.mark.parametrize("http", ["1.1", "2"])
def test_unknown_route_is_404_json(gateway, curl, peer, path, http):
    r = curl(gateway.url(path), method="GET", cert=peer(), http=http)
    mm.assert_error(r, 404, "not_found")


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_wrong_method_is_405(gateway, stores, curl, peer, method):
    c = peer()
    with stores.unchanged():
        r = curl(gateway.url(REGISTER), method=method, cert=c, json_body={} if method != "GET" else None)
    mm.assert_error(r, 405, "method_not_allowed")


def test_405_names_the_allowed_method(gateway, curl, peer):
    """RFC 9110 §15.5.6: a 405 response carries Allow."""
    r = curl(gateway.url(REGISTER), method="GET", cert=peer())
    assert r.status == 405, r
    assert "POST" in r.headers.get("allow", ""), f"405 without Allow: POST: {r.headers}"


@pytest.mark.parametrize("path", ["/api/relay/livez", "/api/relay/readyz", "/api/relay/metrics", "/api/relay/healthz"])
def test_internal_endpoints_are_not_public(gateway, curl, peer, path):
    """A service's /livez, /readyz and /metrics belong to its internal
    listener (SPEC §6): the public gateway must not expose them under the
    service's prefix."""
    r = curl(gateway.url(path), method="GET", cert=peer())
    assert r.status in (403, 404), f"{path} reached through the public gateway: {r!r}"
    mm.assert_error(r, r.status, "not_found" if r.status == 404 else "forbidden")


@pytest.mark.parametrize(
    "path",
    ["/api/relay/metrics?x=1", "/api/relay/%6Detrics", "/api/relay/./metrics", "/api/relay/x/../metrics",
     "/api/relay//metrics", "/api/relay/metrics/", "/api/relay/%2e/readyz", "/api/relay/metrics%00"],
)
@pytest.mark.parametrize("http", ["1.1", "2"])
def test_internal_endpoints_not_reachable_by_path_tricks(gateway, curl, peer, path, http):
    r = curl(gateway.url(path), method="GET", cert=peer(), http=http, extra=["--path-as-is"])
    assert r.status in (400, 403, 404), f"{path} reached through the public gateway: {r!r}"
    assert b"mm_http_requests_total" not in r.body and b'"status":' not in r.body, r
    mm.assert_error(r, r.status, r.json()["error"]["code"])  # the one error shape, whatever the code


@pytest.mark.parametrize("path", ["/api/bootstrap/discover", "/api/signal/inbox"])
def test_unconfigured_service_is_503(gateway, curl, peer, path):
    r = curl(gateway.url(path), method="GET", cert=peer())
    mm.assert_error(r, 503, "unavailable")
    assert r.headers.get("retry-after"), f"503 without Retry-After: {r.headers}"


def test_unreachable_service_is_503_json(start_gateway, curl, peer):
    """A configured but unreachable service is 503 unavailable in the
    SPEC's shape, not h2o's plain-text 502."""
    g = start_gateway(name="mm-gateway-dead", MM_SIGNAL_URL=f"http://127.0.0.1:{mm.free_port()}")
    r = curl(g.url("/api/signal/inbox"), method="GET", cert=peer())
    mm.assert_error(r, 503, "unavailable")
    assert r.headers.get("retry-after"), f"503 without Retry-After: {r.headers}"


# --- identity headers ------------------------------------------------------------


@pytest.mark.parametrize("http", ["1.1", "2"])
def test_spoofed_identity_headers_are_ignored(gateway, stores, curl, peer, http):
    victim = peer()
    mm.assert_registration(curl(gateway.url(REGISTER), cert=victim, json_body={}), 201, victim)
    victim_row = stores.peer(victim.peer_id)

    attacker = peer()
    spoof = [
        f"X-MM-Peer-Id: {victim.peer_id}",
        f"x-mm-peer-email: {victim.email}",
        f"X-MM-Cert-Fingerprint: {victim.fingerprint}",
        "X-Mm-Client-Addr: 203.0.113.66:4444",
        "X-Forwarded-For: 203.0.113.66",
        "X-MM-Request-Id: spoofed-request-id",
        f"X-MM-PEER-ID: {'0' * 64}",
    ]
    r = curl(gateway.url(REGISTER), cert=attacker, json_body={}, headers=spoof, http=http)
    body = mm.assert_registration(r, 201, attacker)
    assert body["peer_id"] == attacker.peer_id and body["email"] == attacker.email
    assert stores.peer(victim.peer_id) == victim_row, "the victim's row changed"
    assert stores.peer("0" * 64) is None
    assert stores.peers_with_email(attacker.email) == [attacker.peer_id]
    assert stores.peers_with_email(victim.email) == [victim.peer_id]

    # Claiming the victim's email in the body as well changes nothing.
    other = peer()
    with stores.unchanged():
        r = curl(gateway.url(REGISTER), cert=other, json_body={"email": victim.email}, headers=spoof, http=http)
    mm.assert_error(r, 400, "email_mismatch")


def test_spoofed_headers_without_certificate_still_401(gateway, stores, curl, peer):
    victim = peer()
    with stores.unchanged():
        r = curl(gateway.url(REGISTER), json_body={}, headers=[
            f"X-MM-Peer-Id: {victim.peer_id}",
            f"X-MM-Peer-Email: {victim.email}",
            f"X-MM-Cert-Fingerprint: {victim.fingerprint}",
        ])
    mm.assert_error(r, 401, "client_certificate_required")


# --- bodies ----------------------------------------------------------------------


def _padded(total):
    """A JSON object of exactly `total` bytes (an unknown field as padding)."""
    head, tail = '{"pad":"', '"}'
    return head + "x" * (total - len(head) - len(tail)) + tail


def test_body_of_exactly_64_kib_is_accepted(gateway, curl, peer):
    c = peer()
    data = _padded(64 * 1024)
    assert len(data) == 65536
    mm.assert_registration(curl(gateway.url(REGISTER), cert=c, data=data), 201, c)


@pytest.mark.parametrize("http", ["1.1", "2"])
@pytest.mark.parametrize("size", [64 * 1024 + 1, 1024 * 1024])
def test_body_over_64_kib_is_413(gateway, stores, curl, peer, http, size):
    c = peer()
    with stores.unchanged():
        r = curl(gateway.url(REGISTER), cert=c, data=_padded(size), http=http)
    mm.assert_error(r, 413, "body_too_large")


def test_chunked_body_over_64_kib_is_413(gateway, stores, curl, peer):
    c = peer()
    with stores.unchanged():
        r = curl(gateway.url(REGISTER), cert=c, data=_padded(200 * 1024), headers=["Transfer-Encoding: chunked"])
    mm.assert_error(r, 413, "body_too_large")


@pytest.mark.parametrize(
    "data",
    ['{"display_name":', "{} x", "nope", '{"a":1,}', b'{"display_name":"\xff\xfe"}', "[" * 5000 + "]" * 5000],
    ids=["truncated", "trailing", "bare_word", "trailing_comma", "invalid_utf8", "deep_nesting"],
)
def test_broken_json_is_400_invalid_json(gateway, stores, curl, peer, data):
    c = peer()
    with stores.unchanged():
        r = curl(gateway.url(REGISTER), cert=c, data=data)
    mm.assert_error(r, 400, "invalid_json")


@pytest.mark.parametrize("data", ["[]", '"x"', "42", "null", "true"])
def test_json_that_is_not_an_object_is_400_invalid_json(gateway, stores, curl, peer, data):
    with stores.unchanged():
        r = curl(gateway.url(REGISTER), cert=peer(), data=data)
    mm.assert_error(r, 400, "invalid_json")


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", "application/jsonx"])
def test_wrong_content_type_is_415(gateway, stores, curl, peer, ctype):
    with stores.unchanged():
        r = curl(gateway.url(REGISTER), cert=peer(), data="{}", content_type=ctype)
    mm.assert_error(r, 415, "unsupported_media_type")


@pytest.mark.parametrize("ctype", ["application/json; charset=utf-8", "Application/JSON"])
def test_json_content_type_variants_accepted(gateway, curl, peer, ctype):
    c = peer()
    mm.assert_registration(curl(gateway.url(REGISTER), cert=c, data="{}", content_type=ctype), 201, c)


# --- rate limit ------------------------------------------------------------------


def test_rate_limit_per_identity(start_gateway, stores, server_ca, peer):
    g = start_gateway(name="mm-gateway-rl", MM_RATE_LIMIT=1, MM_RATE_BURST=3)
    a, b = peer(), peer()

    def once(c):
        # A new connection per request: the limit is per identity, not per
        # connection or per worker thread.
        conn = mm.TLSConn(g.port, mm.ssl_client_context(server_ca.cert, c))
        try:
            return conn.request("POST", REGISTER, {})
        finally:
            conn.close()

    # 3 pass at once (the burst); then one token per second refills, so on
    # a slow machine a 4th or 5th may pass too before the first 429.
    t0 = time.monotonic()
    answers = []
    while len(answers) < 10 and (not answers or answers[-1].status != 429):
        answers.append(once(a))
    elapsed = time.monotonic() - t0
    statuses = [r.status for r in answers]
    assert statuses[:3] == [201, 200, 200], statuses
    limited = answers[-1]
    mm.assert_error(limited, 429, "rate_limited")
    assert len(answers) - 1 <= 3 + int(elapsed) + 1, f"{statuses} in {elapsed:.2f}s: the limit is 1/s, burst 3"
    assert stores.events(a.peer_id) == ["registered"]
    retry = limited.headers.get("retry-after", "")
    assert retry.isdigit() and 1 <= int(retry) <= 2, f"Retry-After {retry!r}"

    assert once(b).status == 201, "another identity must not be limited"
    time.sleep(int(retry) + 0.1)
    assert once(a).status == 200, "the identity should be served again after Retry-After"


# --- PROXY protocol ----------------------------------------------------------------


@pytest.fixture
def proxy_gateway(start_gateway):
    return start_gateway(name="mm-gateway-proxy", MM_TRUST_PROXY_PROTOCOL=1)


def test_proxy_protocol(proxy_gateway, curl, peer):
    g = proxy_gateway
    c = peer()
    r = curl(g.url(REGISTER), cert=c, json_body={}, extra=["--haproxy-protocol"])
    mm.assert_registration(r, 201, c)
    r = curl(g.url(REGISTER), cert=c, json_body={}, extra=["--haproxy-protocol"], http="2")
    mm.assert_registration(r, 200, c)


def test_proxy_protocol_address_is_the_client_address(proxy_gateway, server_ca, peer):
    """The address in the PROXY header is the one the gateway uses (it shows
    in its access log as `client`; register itself does not echo it)."""
    c = peer()
    conn = mm.TLSConn(proxy_gateway.port, mm.ssl_client_context(server_ca.cert, c),
                      preamble=b"PROXY TCP4 203.0.113.77 127.0.0.1 40404 443\r\n")
    try:
        r = conn.request("POST", REGISTER, {})
    finally:
        conn.close()
    mm.assert_registration(r, 201, c)

    def logged():
        for line in mm.tail(proxy_gateway.log, 200).splitlines():
            if c.peer_id in line and '"status":201' in line:
                return line
        return None

    line = mm.wait_for(logged, timeout=3, what="the access log line of the request")
    assert '"client":"203.0.113.77"' in line, f"the PROXY header's address was not used: {line}"


# --- internal listener ----------------------------------------------------------------

METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (-?[0-9.eE+-]+|NaN|\+Inf|-Inf)( -?\d+)?$")


def _metrics(url):
    status, headers, body = mm.http_get(url)
    assert status == 200, f"{url}: {status}"
    assert headers.get("content-type", "").startswith("text/plain"), headers
    samples = {}
    for line in body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        m = METRIC_LINE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        samples[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return samples


def _request_total(samples):
    return sum(v for k, v in samples.items() if re.search(r"requests?_total", k.split("{")[0]))


@pytest.mark.parametrize("path", ["/livez", "/healthz", "/readyz"])
def test_gateway_internal_health(gateway, path):
    status, headers, _ = mm.http_get(gateway.internal(path))
    assert status == 200


@pytest.mark.parametrize("path", ["/livez", "/healthz", "/readyz"])
def test_tracker_internal_health(tracker, path):
    status, _, _ = mm.http_get(tracker.internal(path))
    assert status == 200


def test_gateway_metrics_count_requests(gateway, curl, peer):
    before = _request_total(_metrics(gateway.internal("/metrics")))
    c = peer()
    for _ in range(3):
        curl(gateway.url(REGISTER), cert=c, json_body={})
    after = _request_total(_metrics(gateway.internal("/metrics")))
    assert after >= before + 3, f"no *_requests_total counter grew by 3: {before} -> {after}"


def test_tracker_metrics_count_requests(tracker, gateway, curl, peer):
    before = _request_total(_metrics(tracker.internal("/metrics")))
    curl(gateway.url(REGISTER), cert=peer(), json_body={})
    after = _request_total(_metrics(tracker.internal("/metrics")))
    assert after >= before + 1, f"no *_requests_total counter grew: {before} -> {after}"


def test_internal_listener_is_plain_http_without_api(gateway):
    status, headers, body = mm.http_get(gateway.internal(REGISTER))
    assert status == 404, f"the internal listener must not serve the API: {status} {body[:200]!r}"
