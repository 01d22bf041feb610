-- Domain events received from peers (issue 17), for this instance's
-- `events` subscribers. A peer's EVENT batch is recorded in one transaction
-- with the peer's last processed id (`received_event_cursors`): ids at or
-- below it are ignored, so a batch delivered twice is processed once.
-- Announced on mosaic_received_events; pruned after the retention.

CREATE TABLE received_event_cursors (
    peer_id      uuid PRIMARY KEY REFERENCES peers ON DELETE CASCADE,
    last_id      bigint NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE received_events (
    peer_id      uuid NOT NULL REFERENCES peers ON DELETE CASCADE,
    id           bigint NOT NULL,               -- the id on the peer
    workspace_id uuid NOT NULL,                 -- the peer's workspace
    type         text NOT NULL,
    object_id    uuid NOT NULL,
    changed      text[] NOT NULL,
    at           timestamptz NOT NULL,          -- as the peer said
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (peer_id, id)
);
CREATE INDEX received_events_received_at ON received_events (received_at);

-- Records one batch: events above the peer's last processed id, then the
-- cursor moved to `through` (the batch covers every id up to it). Returns
-- the last processed id, which the sender takes as the acknowledgement.
CREATE FUNCTION record_received_events(peer uuid, events jsonb, through bigint) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    last bigint;
BEGIN
    INSERT INTO received_event_cursors (peer_id, last_id) VALUES (peer, 0) ON CONFLICT DO NOTHING;
    SELECT last_id INTO last FROM received_event_cursors WHERE peer_id = peer FOR UPDATE;
    INSERT INTO received_events (peer_id, id, workspace_id, type, object_id, changed, at)
    SELECT peer, e.id, e.workspace_id, e.type, e.object_id, e.changed, e.at
    FROM jsonb_to_recordset(events) AS e(id bigint, workspace_id uuid, type text, object_id uuid,
                                          changed text[], at timestamptz)
    WHERE e.id > last
    ON CONFLICT DO NOTHING;
    IF through > last THEN
        UPDATE received_event_cursors SET last_id = through, received_at = now() WHERE peer_id = peer;
        PERFORM pg_notify('mosaic_received_events', peer::text);
        last := through;
    END IF;
    RETURN last;
END $$;

CREATE FUNCTION prune_received_events(retention interval) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    pruned bigint;
BEGIN
    DELETE FROM received_events WHERE received_at < now() - retention;
    GET DIAGNOSTICS pruned = ROW_COUNT;
    RETURN pruned;
END $$;

REVOKE ALL ON FUNCTION record_received_events(uuid, jsonb, bigint), prune_received_events(interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION record_received_events(uuid, jsonb, bigint), prune_received_events(interval) TO mosaic_app;

-- A grant delivers to the whole instance (the peer refuses to subscribe a
-- grant limited to some people): every signed-in local user reads them,
-- as any of them may read the peer's granted data; never a peer.
ALTER TABLE received_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE received_events FORCE ROW LEVEL SECURITY;
GRANT SELECT ON received_events TO mosaic_app;
CREATE POLICY received_events_local_users ON received_events FOR SELECT
    USING (current_user_id() IS NOT NULL AND NOT (SELECT peer_scoped()));
CREATE POLICY received_events_definer ON received_events
    USING (current_user <> 'mosaic_app') WITH CHECK (current_user <> 'mosaic_app');

GRANT SELECT ON received_event_cursors TO mosaic_app;

-- Bookkeeping (a peer and a number), but every table has forced RLS.
ALTER TABLE received_event_cursors ENABLE ROW LEVEL SECURITY;
ALTER TABLE received_event_cursors FORCE ROW LEVEL SECURITY;
CREATE POLICY received_event_cursors_all ON received_event_cursors USING (true) WITH CHECK (true);
