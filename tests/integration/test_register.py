"""SPEC §3.1 POST /api/relay/register: binds the certificate's email to its
peer_id, first come first bound; idempotent for the same key; every bad
input is a 4xx in the one error shape and changes nothing."""

import concurrent.futures

import pytest

import mm

REGISTER = "/api/relay/register"


def test_register_then_again_then_renewed(gateway, stores, curl, certs):
    email = mm.uniq_email("renew")
    c = certs.self_signed(email)
    first = mm.assert_registration(curl(gateway.url(REGISTER), cert=c, json_body={}), 201, c)
    row = stores.peer(c.peer_id)
    assert row["email"] == email and row["fingerprint"] == c.fingerprint

    again = mm.assert_registration(curl(gateway.url(REGISTER), cert=c, json_body={}), 200, c)
    assert again["registered_at"] == first["registered_at"]

    renewed = certs.self_signed(email, key=c.key)
    assert renewed.peer_id == c.peer_id and renewed.fingerprint != c.fingerprint
    body = mm.assert_registration(curl(gateway.url(REGISTER), cert=renewed, json_body={}), 200, renewed)
    assert body["peer_id"] == c.peer_id
    assert body["registered_at"] == first["registered_at"]
    row = stores.peer(c.peer_id)
    assert row["fingerprint"] == renewed.fingerprint, "the renewed certificate's fingerprint was not stored"
    assert stores.peers_with_email(email) == [c.peer_id]

    assert stores.events(c.peer_id, "registered") == ["registered"], "exactly one 'registered' event"
    # Registering is not broadcasting: no presence appears.
    assert stores.redis_raw("EXISTS", f"mm:presence:{c.peer_id}") == "0"


def test_register_writes_one_row_and_one_event(gateway, stores, curl, peer):
    c = peer()
    before = int(stores.sql_value("SELECT count(*) FROM peers"))
    mm.assert_registration(curl(gateway.url(REGISTER), cert=c, json_body={}), 201, c)
    assert int(stores.sql_value("SELECT count(*) FROM peers")) == before + 1
    assert stores.events(c.peer_id) == ["registered"]


@pytest.mark.parametrize(
    "how",
    [
        {"data": None, "content_type": None},  # POST with no body at all
        {"data": "", "content_type": "application/json"},
        {"data": "", "content_type": None},
        {"data": "{}", "content_type": "application/json"},
    ],
    ids=["no_body", "empty_json", "empty_no_type", "empty_object"],
)
def test_empty_body_is_an_empty_object(gateway, curl, peer, how):
    c = peer()
    r = curl(gateway.url(REGISTER), cert=c, **how)
    mm.assert_registration(r, 201, c)


def test_unknown_fields_are_ignored(gateway, curl, peer):
    c = peer()
    r = curl(gateway.url(REGISTER), cert=c, json_body={"color": "blue", "nested": {"a": [1, 2]}, "n": 1.5})
    mm.assert_registration(r, 201, c)


def test_certificate_without_email_is_400(gateway, stores, curl, certs):
    c = certs.self_signed(None)
    assert c.email is None
    with stores.unchanged():
        r = curl(gateway.url(REGISTER), cert=c, json_body={})
        mm.assert_error(r, 400, "certificate_has_no_email")
        # Naming an email in the body does not make up for it.
        r = curl(gateway.url(REGISTER), cert=c, json_body={"email": mm.uniq_email("body")})
        assert r.status == 400, r
        assert r.json()["error"]["code"] in ("certificate_has_no_email", "email_mismatch"), r


@pytest.mark.parametrize("bad", ["not-an-email", "two@@example.com", "@example.com", ("x" * 65) + "@example.com"])
def test_certificate_with_invalid_email_is_400_no_email(gateway, stores, curl, certs, bad):
    c = certs.self_signed(bad, expect_email="")
    with stores.unchanged():
        r = curl(gateway.url(REGISTER), cert=c, json_body={})
    mm.assert_error(r, 400, "certificate_has_no_email")


def test_body_email_must_match_certificate(gateway, stores, curl, peer):
    c = peer()
    with stores.unchanged():
        r = curl(gateway.url(REGISTER), cert=c, json_body={"email": mm.uniq_email("other")})
    mm.assert_error(r, 400, "email_mismatch")
    assert stores.peer(c.peer_id) is None


def test_body_email_differing_only_in_case_matches(gateway, stores, curl, peer):
    c = peer()
    r = curl(gateway.url(REGISTER), cert=c, json_body={"email": c.email.upper()})
    mm.assert_registration(r, 201, c)
    assert stores.peer(c.peer_id)["email"] == c.email


def test_email_taken_by_another_key_is_409(gateway, stores, curl, certs):
    email = mm.uniq_email("taken")
    owner = certs.self_signed(email)
    mm.assert_registration(curl(gateway.url(REGISTER), cert=owner, json_body={}), 201, owner)

    for thief in (certs.self_signed(email), certs.self_signed(email.upper()), certs.self_signed(email, alg="ed25519")):
        with stores.unchanged():
            r = curl(gateway.url(REGISTER), cert=thief, json_body={})
        mm.assert_error(r, 409, "email_taken")
        assert stores.peer(thief.peer_id) is None
    assert stores.peers_with_email(email) == [owner.peer_id]
    # The owner is unaffected.
    mm.assert_registration(curl(gateway.url(REGISTER), cert=owner, json_body={}), 200, owner)


@pytest.mark.parametrize("name", ["Alice", "Zoë 日本 🎉", "x" * 128, "é" * 128], ids=["ascii", "unicode", "128", "128_non_ascii"])
def test_display_name_stored_and_returned(gateway, stores, curl, peer, name):
    c = peer()
    r = curl(gateway.url(REGISTER), cert=c, json_body={"display_name": name})
    mm.assert_registration(r, 201, c, display_name=name)
    assert stores.peer(c.peer_id)["display_name"] == name
    # ... and read back on the idempotent path.
    mm.assert_registration(curl(gateway.url(REGISTER), cert=c, json_body={}), 200, c, display_name=name)


def test_display_name_changes_on_registering_again(gateway, stores, curl, peer):
    """Registering again with a display_name replaces it; without one keeps
    it (the peers.updated_at comment in proto/sql/0001_init.sql)."""
    c = peer()
    mm.assert_registration(curl(gateway.url(REGISTER), cert=c, json_body={"display_name": "A"}), 201, c,
                           display_name="A")
    mm.assert_registration(curl(gateway.url(REGISTER), cert=c, json_body={"display_name": "B"}), 200, c,
                           display_name="B")
    assert stores.peer(c.peer_id)["display_name"] == "B"
    mm.assert_registration(curl(gateway.url(REGISTER), cert=c, json_body={}), 200, c, display_name="B")
    assert stores.events(c.peer_id, "registered") == ["registered"]


@pytest.mark.parametrize(
    "body,field",
    [
        ({"display_name": 42}, "display_name"),
        ({"display_name": ["Alice"]}, "display_name"),
        ({"display_name": {"first": "A"}}, "display_name"),
        ({"display_name": True}, "display_name"),
        ({"display_name": "x" * 129}, "display_name"),
        ({"display_name": "é" * 129}, "display_name"),
        ({"email": 7}, "email"),
        ({"email": ["a@example.com"]}, "email"),
    ],
    ids=["dn_number", "dn_array", "dn_object", "dn_bool", "dn_129_chars", "dn_129_non_ascii", "email_number",
         "email_array"],
)
def test_mistyped_fields_are_400_invalid_field(gateway, stores, curl, peer, body, field):
    c = peer()
    with stores.unchanged():
        r = curl(gateway.url(REGISTER), cert=c, json_body=body)
    mm.assert_error(r, 400, "invalid_field", field=field)
    assert stores.peer(c.peer_id) is None


@pytest.mark.parametrize(
    "data",
    ['{"display_name":"a\\u0000b"}', '{"email":"' + "x" * 10000 + '@example.com"}', '{"email":""}',
     '{"email":"a\\u0000@example.com"}'],
    ids=["nul_in_display_name", "huge_email", "empty_email", "nul_in_email"],
)
def test_hostile_strings_are_400(gateway, stores, curl, peer, data):
    c = peer()
    with stores.unchanged():
        r = curl(gateway.url(REGISTER), cert=c, data=data)
    assert r.status == 400, r
    mm.assert_error(r, 400, r.json()["error"]["code"])
    assert r.json()["error"]["code"] in ("invalid_json", "invalid_field", "email_mismatch"), r


def test_invalid_field_on_registered_peer_changes_nothing(gateway, stores, curl, peer):
    c = peer()
    mm.assert_registration(curl(gateway.url(REGISTER), cert=c, json_body={"display_name": "Kept"}), 201, c,
                           display_name="Kept")
    with stores.unchanged():
        r = curl(gateway.url(REGISTER), cert=c, json_body={"display_name": "y" * 500})
    mm.assert_error(r, 400, "invalid_field", field="display_name")


def _parallel(n, fn):
    with concurrent.futures.ThreadPoolExecutor(n) as ex:
        return list(ex.map(lambda _: fn(), range(n)))


def test_concurrent_registrations_of_one_key(gateway, stores, curl, peer):
    c = peer()
    results = _parallel(8, lambda: curl(gateway.url(REGISTER), cert=c, json_body={}))
    statuses = sorted(r.status for r in results)
    assert statuses == [200] * 7 + [201], f"expected one 201 and seven 200: {results}"
    assert stores.peers_with_email(c.email) == [c.peer_id]
    assert stores.events(c.peer_id, "registered") == ["registered"]


def test_concurrent_registrations_of_one_email(gateway, stores, curl, certs):
    email = mm.uniq_email("race")
    contenders = [certs.self_signed(email) for _ in range(6)]
    with concurrent.futures.ThreadPoolExecutor(6) as ex:
        results = list(ex.map(lambda c: curl(gateway.url(REGISTER), cert=c, json_body={}), contenders))
    winners = [c for c, r in zip(contenders, results) if r.status == 201]
    assert len(winners) == 1, f"first come, first bound: {results}"
    for c, r in zip(contenders, results):
        if c is not winners[0]:
            mm.assert_error(r, 409, "email_taken")
    assert stores.peers_with_email(email) == [winners[0].peer_id]
