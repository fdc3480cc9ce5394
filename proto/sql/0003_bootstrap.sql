-- 0003: bootstrap_nodes — broadcasting peers that volunteer as entry points
-- of the peers' gossip network (SPEC §3.2).
--
-- A row exists exactly while its membership lasts, give or take the
-- reaper's lag: liveness itself is the Redis key mm:bootstrap:<peer_id>
-- together with the peer's presence key, which discover reads, so a node is
-- invisible the moment either expires. Every writer that deletes a row
-- writes its `bootstrap_off` event in the same statement (mm-bootstrap's
-- unregister, mm-tracker's stop, mm-reaper); the cascade below is only a
-- safety net for a broadcasts row deleted by hand.

CREATE TABLE bootstrap_nodes (
    peer_id           text        PRIMARY KEY REFERENCES broadcasts (peer_id) ON DELETE CASCADE,
    gossip_port       integer     NOT NULL CHECK (gossip_port BETWEEN 1 AND 65535),
    reachable_address text        NOT NULL CHECK (char_length(reachable_address) BETWEEN 3 AND 64),
    registered_at     timestamptz NOT NULL DEFAULT now(),
    renewed_at        timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE bootstrap_nodes IS
    'Bootstrap registry: broadcasting peers that volunteer as entry points of the gossip network, one row per membership. Liveness is the Redis key mm:bootstrap:<peer_id> (TTL MM_BOOTSTRAP_TTL) and the peer''s presence key; mm-reaper deletes the row when the membership expires or the broadcast ends.';
COMMENT ON COLUMN bootstrap_nodes.peer_id IS
    'The volunteering peer (broadcasts.peer_id): a membership needs a live broadcast and ends with it.';
COMMENT ON COLUMN bootstrap_nodes.gossip_port IS
    'The TCP port of the peer''s gossip endpoint, on every address of its broadcast (default: the broadcast port).';
COMMENT ON COLUMN bootstrap_nodes.reachable_address IS
    'The address (ip:port, [v6]:port) where mm-bootstrap''s connect test reached the gossip port when the membership began; remembered for the membership''s lifetime, so renewals do not test again.';
COMMENT ON COLUMN bootstrap_nodes.registered_at IS
    'When this membership began (a renewal keeps it; a membership that lapsed starts over).';
COMMENT ON COLUMN bootstrap_nodes.renewed_at IS
    'When the peer last registered (began or renewed the membership, extending it to a full TTL).';
