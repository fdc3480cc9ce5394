"""SPEC §1/§2: the gateway speaks TLS 1.2 and 1.3 (AEAD suites only),
HTTP/1.1 and HTTP/2, and keeps a client's identity across TLS session
resumption (the certificate is not sent again on a resumed session)."""

import ssl
import warnings

import pytest

import mm

REGISTER = "/api/relay/register"


@pytest.mark.parametrize("http,version", [("2", "2"), ("1.1", "1.1")])
def test_http_versions(gateway, curl, peer, http, version):
    c = peer()
    r = curl(gateway.url(REGISTER), cert=c, json_body={}, http=http)
    mm.assert_registration(r, 201, c)
    assert r.version == version, f"expected HTTP/{version}, got {r.version}"
    r = curl(gateway.url(REGISTER), cert=c, json_body={}, http=http)
    mm.assert_registration(r, 200, c)


@pytest.mark.parametrize("tls", ["1.2", "1.3"])
def test_tls_versions_accepted(gateway, curl, peer, tls):
    c = peer()
    flags = ["--tlsv1.3"] if tls == "1.3" else ["--tlsv1.2", "--tls-max", "1.2"]
    r = curl(gateway.url(REGISTER), cert=c, json_body={}, extra=flags + ["-v"])
    mm.assert_registration(r, 201, c)
    assert f"TLSv{tls}" in r.stderr, f"not negotiated as TLS {tls}: {r.stderr[-2000:]}"


def test_tls12_aead_suite_accepted(gateway, curl, peer):
    c = peer()
    r = curl(gateway.url(REGISTER), cert=c, json_body={},
             extra=["--tls-max", "1.2", "--ciphers", "ECDHE-ECDSA-AES128-GCM-SHA256"])
    mm.assert_registration(r, 201, c)


@pytest.mark.parametrize("cipher", ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384"])
def test_tls12_cbc_suite_refused(gateway, curl, peer, cipher):
    r = curl(gateway.url(REGISTER), cert=peer(), json_body={}, extra=["--tls-max", "1.2", "--ciphers", cipher])
    assert r.rc != 0 and r.status == 0, f"a CBC-only TLS 1.2 client must fail the handshake: {r!r}"


def test_tls11_refused(gateway, server_ca):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(server_ca.cert)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client offer TLS 1.1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError) as e:
        mm.TLSConn(gateway.port, ctx)
    assert "NO_PROTOCOLS_AVAILABLE" not in str(e.value), f"the client refused by itself: {e.value}"


@pytest.mark.parametrize("tls", ["1.3", "1.2"])
def test_session_resumption_keeps_identity(gateway, stores, server_ca, peer, tls):
    c = peer()
    maxv = ssl.TLSVersion.TLSv1_2 if tls == "1.2" else ssl.TLSVersion.TLSv1_3
    ctx = mm.ssl_client_context(server_ca.cert, c, min_version=maxv, max_version=maxv)

    first = mm.TLSConn(gateway.port, ctx)
    try:
        r1 = first.request("POST", REGISTER, {})
        session = first.session
        assert first.sock.version() == f"TLSv{tls}"
    finally:
        first.close()
    mm.assert_registration(r1, 201, c)
    assert session is not None, "the server issued no session to resume"

    for _ in range(2):  # a resumed session can itself be resumed
        again = mm.TLSConn(gateway.port, ctx, session=session)
        try:
            r2 = again.request("POST", REGISTER, {})
            reused = again.session_reused
            session = again.session or session
        finally:
            again.close()
        assert reused, f"TLS {tls} session was not resumed (SSL_CTX_set_session_id_context?)"
        body = mm.assert_registration(r2, 200, c)
        assert body["peer_id"] == c.peer_id
    assert stores.events(c.peer_id, "registered") == ["registered"]


def test_keepalive_connection_carries_several_requests(gateway, server_ca, peer):
    c = peer()
    conn = mm.TLSConn(gateway.port, mm.ssl_client_context(server_ca.cert, c))
    try:
        statuses = [conn.request("POST", REGISTER, {}).status for _ in range(5)]
    finally:
        conn.close()
    assert statuses == [201, 200, 200, 200, 200]
