-- When each peer's identity document was last re-read, shared by every
-- replica of this instance (issue 18): a refresh by one serves all (the
-- keys it learns are in `peers`, announced to every replica), and requests
-- naming unknown key ids make at most so many re-reads a minute per peer
-- whichever replica they reach. Only through the function below.
CREATE TABLE peer_key_refreshes (
    peer uuid PRIMARY KEY,
    refreshed_at timestamptz NOT NULL,
    -- Re-reads caused by unknown key ids within the last minute.
    unknown_at timestamptz[] NOT NULL DEFAULT '{}'
);

-- Whether this replica may re-read the peer's document now, and if so
-- records that it does: for an unknown key id, while fewer than
-- `p_per_minute` such re-reads happened within a minute; otherwise when the
-- last re-read is at least `p_stale_after_s` old.
CREATE FUNCTION claim_peer_key_refresh(p_peer uuid, p_unknown boolean, p_stale_after_s integer, p_per_minute integer)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    now_at timestamptz := clock_timestamp();
    last_at timestamptz;
    recent timestamptz[];
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('mosaic.key_refresh'), hashtext(p_peer::text));
    SELECT r.refreshed_at, ARRAY(SELECT t FROM unnest(r.unknown_at) t WHERE t > now_at - interval '1 minute')
    INTO last_at, recent
    FROM peer_key_refreshes r WHERE r.peer = p_peer;
    recent := coalesce(recent, '{}');
    IF p_unknown THEN
        IF cardinality(recent) >= p_per_minute THEN
            RETURN false;
        END IF;
        recent := recent || now_at;
    ELSIF last_at > now_at - make_interval(secs => p_stale_after_s) THEN
        RETURN false;
    END IF;
    INSERT INTO peer_key_refreshes (peer, refreshed_at, unknown_at) VALUES (p_peer, now_at, recent)
    ON CONFLICT (peer) DO UPDATE SET refreshed_at = excluded.refreshed_at, unknown_at = excluded.unknown_at;
    RETURN true;
END
$$;

REVOKE ALL ON FUNCTION claim_peer_key_refresh(uuid, boolean, integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION claim_peer_key_refresh(uuid, boolean, integer, integer) TO mosaic_app;

-- RLS forced like every table's: the request role has no grant and no
-- policy admits it; the definer functions above run as the table's owner.
ALTER TABLE peer_key_refreshes ENABLE ROW LEVEL SECURITY;
ALTER TABLE peer_key_refreshes FORCE ROW LEVEL SECURITY;
CREATE POLICY peer_key_refreshes_definer_only ON peer_key_refreshes
    USING (current_user <> 'mosaic_app') WITH CHECK (current_user <> 'mosaic_app');
