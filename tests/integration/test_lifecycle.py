"""SPEC §6: every service stops cleanly on SIGTERM, even with connections
open; the gateway reaches a service over a unix socket; a service that is
down is a 503 in the SPEC's shape and the gateway recovers when it returns."""

import socket

import mm

REGISTER = "/api/relay/register"


def test_sigterm_with_open_connections(stores, run_dir, server_cert, server_ca, curl, peer):
    tracker = mm.Tracker(stores, run_dir, name="mm-tracker-term").start()
    gateway = None
    conns, raw = [], None
    try:
        gateway = mm.Gateway(tracker.url, server_cert, run_dir, name="mm-gateway-term").start()
        c = peer()
        mm.assert_registration(curl(gateway.url(REGISTER), cert=c, json_body={}), 201, c)
        # An idle keep-alive client (its request done, so the gateway also
        # holds a pooled connection to the tracker), and a TCP connection that
        # never starts its handshake.
        conn = mm.TLSConn(gateway.port, mm.ssl_client_context(server_ca.cert, c))
        conns.append(conn)
        assert conn.request("POST", REGISTER, {}).status == 200
        raw = socket.create_connection(("127.0.0.1", gateway.port))

        took = gateway.stop_checked(timeout=10)
        assert took < 10
        took = tracker.stop_checked(timeout=10)
        assert took < 10
    finally:
        for conn in conns:
            conn.close()
        if raw:
            raw.close()
        for p in (gateway, tracker):
            if p is not None and p.alive():
                p.terminate()


def test_sigterm_when_idle(stores, run_dir, server_cert):
    tracker = mm.Tracker(stores, run_dir, name="mm-tracker-idle").start()
    try:
        gateway = mm.Gateway(tracker.url, server_cert, run_dir, name="mm-gateway-idle").start()
        try:
            assert gateway.stop_checked(timeout=10) < 10
        finally:
            gateway.terminate()
        assert tracker.stop_checked(timeout=10) < 10
    finally:
        tracker.terminate()


def test_tracker_on_unix_socket(stores, run_dir, server_cert, curl, peer):
    tracker = mm.Tracker(stores, run_dir, name="mm-tracker-unix", listen=f"unix:{run_dir}/trk.sock").start()
    try:
        gateway = mm.Gateway(tracker.url, server_cert, run_dir, name="mm-gateway-unix").start()
        try:
            c = peer()
            mm.assert_registration(curl(gateway.url(REGISTER), cert=c, json_body={}), 201, c)
            mm.assert_registration(curl(gateway.url(REGISTER), cert=c, json_body={}, http="2"), 200, c)
            gateway.stop_checked()
        finally:
            gateway.terminate()
        tracker.stop_checked()
    finally:
        tracker.terminate()


def test_tracker_down_is_503_and_gateway_recovers(stores, run_dir, server_cert, curl, peer):
    tracker = mm.Tracker(stores, run_dir, name="mm-tracker-down").start()
    gateway = tracker2 = None
    try:
        gateway = mm.Gateway(tracker.url, server_cert, run_dir, name="mm-gateway-down").start()
        a = peer()
        mm.assert_registration(curl(gateway.url(REGISTER), cert=a, json_body={}), 201, a)

        tracker.stop_checked()
        b = peer()
        for http in ("1.1", "2"):
            with stores.unchanged():
                r = curl(gateway.url(REGISTER), cert=b, json_body={}, http=http)
            mm.assert_error(r, 503, "unavailable")
            assert r.headers.get("retry-after"), f"503 without Retry-After: {r.headers}"
        assert gateway.alive()

        # The same address comes back: the gateway needs no restart.
        tracker2 = mm.Tracker(stores, run_dir, name="mm-tracker-back", listen=tracker.listen).start()
        r = mm.wait_for(lambda: (lambda r: r if r.status != 503 else None)(
            curl(gateway.url(REGISTER), cert=b, json_body={})), timeout=10, what="register after the tracker came back")
        mm.assert_registration(r, 201, b)
        mm.assert_registration(curl(gateway.url(REGISTER), cert=a, json_body={}), 200, a)
        gateway.stop_checked()
        tracker2.stop_checked()
    finally:
        for p in (gateway, tracker, tracker2):
            if p is not None and p.alive():
                p.terminate()
