-- 0002: broadcasts — where a broadcasting peer can be reached.
--
-- A row exists exactly while its peer broadcasts, give or take the reaper's
-- lag: liveness itself is the Redis key mm:presence:<peer_id>, which lookups
-- read, so an expired peer is invisible before its row is gone.

CREATE TABLE broadcasts (
    peer_id          text        PRIMARY KEY REFERENCES peers (peer_id),
    port             integer     NOT NULL CHECK (port BETWEEN 1 AND 65535),
    candidates       jsonb       NOT NULL CHECK (jsonb_typeof(candidates) = 'array'),
    observed_address text,
    started_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TRIGGER broadcasts_touch_updated_at
    BEFORE UPDATE ON broadcasts
    FOR EACH ROW EXECUTE FUNCTION mm_touch_updated_at();

COMMENT ON TABLE broadcasts IS
    'Peers that are broadcasting (online), one row each, with the addresses they can be reached at. Liveness is the Redis key mm:presence:<peer_id>; mm-reaper deletes the row when that key expires.';
COMMENT ON COLUMN broadcasts.peer_id IS
    'The broadcasting peer (peers.peer_id).';
COMMENT ON COLUMN broadcasts.port IS
    'The port the peer said it listens on; the default port of its candidates.';
COMMENT ON COLUMN broadcasts.candidates IS
    'Addresses to try, as lookups show them: [{"ip","port","scope":"loopback|link-local|private|public","source":"reported|observed"}].';
COMMENT ON COLUMN broadcasts.observed_address IS
    'The source IP the gateway saw on the peer''s last ready or heartbeat (X-MM-Client-Addr); NULL when none was passed.';
COMMENT ON COLUMN broadcasts.started_at IS
    'When this broadcast started (online_since in lookups). A ready that replaces a live broadcast keeps it.';
COMMENT ON COLUMN broadcasts.updated_at IS
    'When the row last changed: a replacing ready, or a heartbeat from a new source address.';
