-- 0001: peers and their event log.
--
-- Applied by deploy/local/migrate.sh inside one transaction together with its
-- schema_migrations row: no BEGIN/COMMIT here, nothing that cannot run in a
-- transaction (CREATE INDEX CONCURRENTLY, ALTER TYPE ... ADD VALUE).
-- Operators read these tables (SPEC §7): every column carries a comment.

CREATE TABLE peers (
    peer_id       text        PRIMARY KEY CHECK (peer_id ~ '^[0-9a-f]{64}$'),
    email         text        NOT NULL UNIQUE
                              CHECK (char_length(email) BETWEEN 3 AND 254 AND email = lower(email)),
    fingerprint   text        NOT NULL CHECK (fingerprint ~ '^[0-9a-f]{64}$'),
    display_name  text,
    registered_at timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE peers IS
    'Registered peers: one row per key pair, bound to the email of its certificate (first come, first bound).';
COMMENT ON COLUMN peers.peer_id IS
    'Lowercase hex SHA-256 of the DER SubjectPublicKeyInfo of the peer''s certificate: the identity, stable across certificate renewals with the same key.';
COMMENT ON COLUMN peers.email IS
    'The certificate''s email (subjectAltName rfc822Name, else subject emailAddress), trimmed and lowercased. Unique: one key per email.';
COMMENT ON COLUMN peers.fingerprint IS
    'Lowercase hex SHA-256 of the whole DER certificate last seen at registration.';
COMMENT ON COLUMN peers.display_name IS
    'Optional human-readable name the peer gave at registration.';
COMMENT ON COLUMN peers.registered_at IS
    'When the peer first registered.';
COMMENT ON COLUMN peers.updated_at IS
    'When the row last changed (a re-registration with a renewed certificate or a new display name).';

-- updated_at follows every UPDATE, whatever the writer remembers to set.
CREATE FUNCTION mm_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

COMMENT ON FUNCTION mm_touch_updated_at() IS
    'Trigger function: sets updated_at to now() on UPDATE.';

CREATE TRIGGER peers_touch_updated_at
    BEFORE UPDATE ON peers
    FOR EACH ROW EXECUTE FUNCTION mm_touch_updated_at();

CREATE TABLE peer_events (
    id      bigserial   PRIMARY KEY,
    peer_id text        NOT NULL,
    kind    text        NOT NULL
                        CHECK (kind IN ('registered', 'online', 'offline', 'stopped', 'bootstrap_on', 'bootstrap_off')),
    at      timestamptz NOT NULL DEFAULT now(),
    detail  jsonb
);

CREATE INDEX peer_events_at_idx ON peer_events (at);
CREATE INDEX peer_events_peer_id_at_idx ON peer_events (peer_id, at);

COMMENT ON TABLE peer_events IS
    'Append-only log of what happened to peers, pruned by age. No foreign key to peers: writing an event never waits on or fails because of a peers row.';
COMMENT ON COLUMN peer_events.id IS
    'Insertion order.';
COMMENT ON COLUMN peer_events.peer_id IS
    'The peer the event is about (peers.peer_id).';
COMMENT ON COLUMN peer_events.kind IS
    'registered: first registration; online: a broadcast started; offline: its presence expired (reaped); stopped: the peer ended its broadcast; bootstrap_on / bootstrap_off: it joined / left the bootstrap registry.';
COMMENT ON COLUMN peer_events.at IS
    'When it happened (server time).';
COMMENT ON COLUMN peer_events.detail IS
    'Optional JSON details, e.g. {"port": 54321, "observed": "203.0.113.5"} for online, {"reason": "expired"} for offline.';
