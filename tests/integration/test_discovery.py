"""SPEC §3.1 GET /api/relay/broadcast/lookup and /list through the gateway:
registered callers only, exactly one of email / peer_id, a silent peer
indistinguishable from an unknown one, and a cursor walk that sees every
online peer exactly once in peer_id order, also while peers come and go.
Every rejected request changes nothing (§8).

The shared stores hold other modules' peers too: a full walk is compared
with the presence keys in Redis (what is online), not with this module's
peers alone."""

import concurrent.futures
import random

import pytest

import mm
from mm import cand

TTL = 3600
OBSERVED = "127.0.0.1"


def _parallel(fn, items, n=8):
    with concurrent.futures.ThreadPoolExecutor(n) as ex:
        return list(ex.map(fn, items))


class Member:
    """A broadcasting peer of this module and what its record must show."""

    def __init__(self, cert, port, display_name):
        self.cert = cert
        self.port = port
        self.display_name = display_name
        self.candidates = [cand(f"10.77.{port // 256 % 256}.{port % 256}", port, "private"),
                           cand(OBSERVED, port, "loopback", "observed")]

    @property
    def peer_id(self):
        return self.cert.peer_id

    def check(self, rec):
        return mm.assert_peer_record(rec, self.cert, port=self.port, display_name=self.display_name,
                                     candidates=self.candidates)


def _make_members(certs, curl, gateway, n, tag, register_only=False):
    base = random.randrange(20000, 60000 - n)

    def make(i):
        name = f"{tag} {i}" if i % 2 else None
        c = mm.register(curl, gateway, certs.self_signed(mm.uniq_email(tag)), display_name=name)
        m = Member(c, base + i, name)
        if not register_only:
            _start(curl, gateway, m)
        return m

    return _parallel(make, range(n))


def _start(curl, gateway, m):
    mm.assert_ready(mm.ready(curl, gateway, m.cert, m.port, [m.candidates[0]["ip"]]), m.cert, ttl=TTL)


def _stop(curl, gateway, m):
    assert mm.assert_json(mm.stop(curl, gateway, m.cert), 200) == {}


@pytest.fixture(scope="module")
def observer(certs, curl, gateway):
    return mm.register(curl, gateway, certs.self_signed(mm.uniq_email("observer")))


@pytest.fixture(scope="module")
def crowd(certs, curl, gateway):
    """25 broadcasting peers (more than two pages of 10)."""
    members = _make_members(certs, curl, gateway, 25, "crowd")
    yield members
    _parallel(lambda m: _stop(curl, gateway, m), members)


def _check_shape(rec):
    missing = [k for k in mm.PEER_RECORD_KEYS if k not in rec]
    assert not missing, f"peer record without {missing}: {rec!r}"


# --- lookup ----------------------------------------------------------------------


def test_lookup_by_email_and_by_peer_id(gateway, curl, observer, crowd):
    for m in crowd[:3]:
        a = m.check(mm.assert_json(mm.lookup(curl, gateway, observer, email=m.cert.email), 200))
        b = m.check(mm.assert_json(mm.lookup(curl, gateway, observer, peer_id=m.peer_id), 200))
        assert a["online_since"] == b["online_since"], (a, b)


def test_lookup_email_is_case_insensitive(gateway, curl, observer, crowd):
    m = crowd[0]
    r = mm.lookup(curl, gateway, observer, email=m.cert.email.upper())
    m.check(mm.assert_json(r, 200))
    # an already percent-encoded '@'
    local, domain = m.cert.email.split("@")
    r = mm.lookup(curl, gateway, observer, query=f"email={local}%40{domain}")
    m.check(mm.assert_json(r, 200))


def _not_found_body(r, *queried):
    """The 404 body with the value asked for blanked out (a message may
    echo it): what must not differ between an unknown and a silent peer."""
    err = mm.assert_error(r, 404, "not_found")
    text = err["message"]
    for q in queried:
        text = text.replace(q, "<q>")
    return r.status, r.headers.get("content-type"), text


def test_silent_stopped_and_unknown_peers_are_indistinguishable(gateway, stores, certs, curl, observer):
    silent, stopped = _make_members(certs, curl, gateway, 2, "hidden", register_only=True)
    _start(curl, gateway, stopped)
    _stop(curl, gateway, stopped)
    unknown_email = mm.uniq_email("nobody")
    unknown_id = "%064x" % random.getrandbits(256)
    with stores.unchanged(deep=True):
        by_email = {name: _not_found_body(mm.lookup(curl, gateway, observer, email=e), e)
                    for name, e in (("silent", silent.cert.email), ("stopped", stopped.cert.email),
                                    ("unknown", unknown_email))}
        by_id = {name: _not_found_body(mm.lookup(curl, gateway, observer, peer_id=p), p)
                 for name, p in (("silent", silent.peer_id), ("stopped", stopped.peer_id), ("unknown", unknown_id))}
    assert by_email["silent"] == by_email["unknown"] == by_email["stopped"], by_email
    assert by_id["silent"] == by_id["unknown"] == by_id["stopped"], by_id


def test_lookup_and_list_need_a_registered_caller(gateway, stores, curl, peer, crowd):
    stranger = peer()
    m = crowd[0]
    with stores.unchanged(deep=True):
        for r in (mm.lookup(curl, gateway, stranger, email=m.cert.email),
                  mm.lookup(curl, gateway, stranger, peer_id=m.peer_id),
                  mm.lookup(curl, gateway, stranger, email=mm.uniq_email("nobody")),
                  mm.list_page(curl, gateway, stranger),
                  mm.list_page(curl, gateway, stranger, limit=10)):
            mm.assert_error(r, 403, "not_registered")
    assert stores.peer(stranger.peer_id) is None


@pytest.mark.parametrize(
    "query,fields",
    [
        ("", ("email", "peer_id")),
        ("foo=bar", ("email", "peer_id")),
        ("email=a@example.com&peer_id=" + "a" * 64, ("email", "peer_id")),
        ("peer_id=" + "A" * 64, ("peer_id",)),
        ("peer_id=" + "a" * 63, ("peer_id",)),
        ("peer_id=" + "a" * 65, ("peer_id",)),
        ("peer_id=" + "g" * 64, ("peer_id",)),
        ("peer_id=" + "a" * 62 + "%20a", ("peer_id",)),
        ("peer_id=", ("peer_id",)),
        ("peer_id=" + "a" * 2000, ("peer_id",)),
    ],
    ids=["nothing", "unknown_only", "both", "upper_hex", "63_chars", "65_chars", "not_hex", "space", "empty",
         "huge"],
)
def test_bad_lookup_is_400(gateway, stores, curl, observer, query, fields):
    with stores.unchanged(deep=True):
        r = mm.lookup(curl, gateway, observer, query=query)
    err = mm.assert_error(r, 400, "invalid_field")
    assert any(f in err["message"] for f in fields), f"message should name {' or '.join(fields)}: {err!r}"


def test_upper_case_peer_id_of_an_online_peer_is_400(gateway, stores, curl, observer, crowd):
    with stores.unchanged(deep=True):
        r = mm.lookup(curl, gateway, observer, peer_id=crowd[0].peer_id.upper())
    mm.assert_error(r, 400, "invalid_field", field="peer_id")


# --- list --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query,field",
    [("limit=0", "limit"), ("limit=501", "limit"), ("limit=abc", "limit"), ("limit=-1", "limit"),
     ("limit=10abc", "limit"), ("limit=1.5", "limit"), ("limit=99999999999999999999", "limit"),
     ("limit=%2010", "limit"),
     ("after=zzz", "after"), ("after=!!!", "after"), ("after=" + "x" * 1000, "after"), ("limit=10&after=%00", "after")],
    ids=["limit_0", "limit_501", "limit_abc", "limit_-1", "limit_10abc", "limit_1.5", "limit_huge", "limit_space",
         "after_zzz", "after_bangs", "after_long", "after_nul"],
)
def test_bad_list_is_400(gateway, stores, curl, observer, query, field):
    with stores.unchanged(deep=True):
        r = mm.list_page(curl, gateway, observer, query=query)
    mm.assert_error(r, 400, "invalid_field", field=field)


def _ids(pages):
    return [p["peer_id"] for page in pages for p in page["peers"]]


def test_list_walks_every_online_peer_once_in_order(gateway, stores, curl, observer, crowd):
    online = stores.presence_peer_ids()
    pages = mm.walk_list(curl, gateway, observer, limit=10)
    ids = _ids(pages)
    assert len(ids) == len(set(ids)), f"a peer listed twice: {sorted(i for i in ids if ids.count(i) > 1)}"
    assert ids == sorted(ids), "peers are not in peer_id order across pages"
    assert set(ids) == online, (f"the walk is not the online set: missing {sorted(online - set(ids))}, "
                                f"extra {sorted(set(ids) - online)}")
    # Nothing expired on the shared tracker: every page but the last is full.
    assert all(len(p["peers"]) == 10 for p in pages[:-1]), [len(p["peers"]) for p in pages]
    assert len(pages) >= 3, f"25+ peers in pages of 10 make at least 3 pages: {[len(p['peers']) for p in pages]}"
    records = {p["peer_id"]: p for page in pages for p in page["peers"]}
    for rec in records.values():
        _check_shape(rec)
    for m in crowd:
        m.check(records[m.peer_id])

    # The same peers in one page, and the first ones with the default limit (100) or limit=1.
    if len(online) <= 500:
        one = mm.assert_json(mm.list_page(curl, gateway, observer, limit=500), 200)
        assert [p["peer_id"] for p in one["peers"]] == ids and one["next"] is None, one["next"]
    default = mm.assert_json(mm.list_page(curl, gateway, observer), 200)
    assert [p["peer_id"] for p in default["peers"]] == ids[:100]
    assert (default["next"] is None) == (len(ids) <= 100), default["next"]
    first = mm.assert_json(mm.list_page(curl, gateway, observer, limit=1), 200)
    assert [p["peer_id"] for p in first["peers"]] == ids[:1] and first["next"], first
    # Walking one by one from there gives the same order.
    second = mm.assert_json(mm.list_page(curl, gateway, observer, limit=2, after=first["next"]), 200)
    assert [p["peer_id"] for p in second["peers"]] == ids[1:3], second


def test_list_while_peers_come_and_go(gateway, stores, certs, curl, observer, crowd):
    """Peers online for the whole walk appear exactly once; a peer that
    stops before the walk reaches it never appears; one that starts ahead of
    the walk appears once; the order never goes back."""
    movers = _make_members(certs, curl, gateway, 16, "mover")
    newcomers = _make_members(certs, curl, gateway, 8, "newcomer", register_only=True)
    by_id = {m.peer_id: m for m in crowd + movers + newcomers}
    online = sorted(stores.presence_peer_ids())
    assert {m.peer_id for m in movers} <= set(online)

    # The first page ends exactly on a mover, which then stops: the cursor
    # must outlive the peer it was made from.
    first_mover = min(m.peer_id for m in movers)
    limit_seq = [online.index(first_mover) + 1] + [10] * 1000
    stopped_seen, stopped_ahead, started_ahead, started_behind = set(), set(), set(), set()
    waiting = list(newcomers)

    pages, after, last = [], None, ""
    while True:
        limit = limit_seq[len(pages)]
        body = mm.assert_json(mm.list_page(curl, gateway, observer, limit=limit, after=after), 200)
        assert len(body["peers"]) <= limit, body
        pages.append(body)
        if body["peers"]:
            last = body["peers"][-1]["peer_id"]
        if body["next"] is None:
            break
        after = body["next"]
        assert len(pages) < 200, "list never ends"
        if len(pages) > 4:
            continue
        # Between pages: stop one mover already seen and two still ahead;
        # start two newcomers (wherever their random peer_ids fall).
        live_movers = [m for m in movers if m.peer_id not in stopped_seen | stopped_ahead]
        seen = [m for m in live_movers if m.peer_id <= last]
        ahead = [m for m in live_movers if m.peer_id > last]
        if len(pages) == 1:
            assert seen and seen[-1].peer_id == last == first_mover
            seen = [by_id[last]]
        for m in seen[-1:]:
            _stop(curl, gateway, m)
            stopped_seen.add(m.peer_id)
        for m in ahead[:2]:
            _stop(curl, gateway, m)
            stopped_ahead.add(m.peer_id)
        for m in waiting[:2]:
            _start(curl, gateway, m)
            (started_ahead if m.peer_id > last else started_behind).add(m.peer_id)
        del waiting[:2]

    ids = _ids(pages)
    assert len(ids) == len(set(ids)), f"a peer listed twice: {sorted(i for i in ids if ids.count(i) > 1)}"
    assert ids == sorted(ids), "the walk went back in peer_id order"
    assert len(stopped_ahead) >= 4 and len(started_ahead) + len(started_behind) == 8, (stopped_ahead, started_ahead)
    steady = set(online) - stopped_seen - stopped_ahead
    assert steady <= set(ids), f"peers online all along were skipped: {sorted(steady - set(ids))}"
    assert not stopped_ahead & set(ids), f"stopped peers were listed: {sorted(stopped_ahead & set(ids))}"
    assert started_ahead <= set(ids), f"peers started ahead of the walk were skipped: {sorted(started_ahead - set(ids))}"
    assert set(ids) <= set(online) | started_ahead, f"unexpected peers: {sorted(set(ids) - set(online) - started_ahead)}"
    for page in pages:
        for rec in page["peers"]:
            if rec["peer_id"] in by_id:
                by_id[rec["peer_id"]].check(rec)
            else:
                _check_shape(rec)

    _parallel(lambda m: _stop(curl, gateway, m), movers + newcomers)
    assert not {m.peer_id for m in movers + newcomers} & stores.presence_peer_ids()
