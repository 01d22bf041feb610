-- The nonces of peers' signed requests, shared by every replica of this
-- instance (issue 18): a request received by one replica and replayed to
-- another is refused. Kept until the request's time has passed
-- (keep_until, Unix seconds: its expiry plus the clock skew allowed), then
-- pruned. Not tenant data: no workspace is in it, so no RLS; the request
-- role may only record and prune through the functions below.
CREATE TABLE peer_nonces (
    origin text NOT NULL,
    nonce text NOT NULL,
    keep_until bigint NOT NULL,
    PRIMARY KEY (origin, nonce)
);
CREATE INDEX peer_nonces_keep_until ON peer_nonces (keep_until);

-- 'new' (recorded), 'replayed' (already there) or 'expired' (its time has
-- passed by the database's clock, the one pruning uses: what was pruned can
-- never be recorded again).
--
-- Its commit does not wait for the disk (synchronous_commit off, for this
-- transaction only): every peer request records a nonce, and the flush
-- cost 1.3-3.3 ms of each (0.25-0.41 ms without). The record is visible to
-- every replica at commit all the same; only a crash of PostgreSQL itself
-- could lose the last few hundred milliseconds of nonces, and the replicas
-- that received those requests still refuse them from memory.
CREATE FUNCTION record_peer_nonce(p_origin text, p_nonce text, p_keep_until bigint) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    IF p_keep_until < extract(epoch FROM clock_timestamp()) THEN
        RETURN 'expired';
    END IF;
    INSERT INTO peer_nonces (origin, nonce, keep_until) VALUES (p_origin, p_nonce, p_keep_until)
    ON CONFLICT DO NOTHING;
    IF FOUND THEN
        RETURN 'new';
    END IF;
    RETURN 'replayed';
END
$$;

-- Forgets the nonces whose time has passed; one replica at a time (the
-- others skip while it holds the lock). Returns how many were forgotten,
-- or NULL when another replica is pruning.
CREATE FUNCTION prune_peer_nonces() RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    pruned bigint;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('mosaic.prune_peer_nonces')) THEN
        RETURN NULL;
    END IF;
    DELETE FROM peer_nonces WHERE keep_until < extract(epoch FROM clock_timestamp());
    GET DIAGNOSTICS pruned = ROW_COUNT;
    RETURN pruned;
END
$$;

REVOKE ALL ON FUNCTION record_peer_nonce(text, text, bigint), prune_peer_nonces() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION record_peer_nonce(text, text, bigint), prune_peer_nonces() TO mosaic_app;

-- RLS forced like every table's: the request role has no grant and no
-- policy admits it; the definer functions above run as the table's owner.
ALTER TABLE peer_nonces ENABLE ROW LEVEL SECURITY;
ALTER TABLE peer_nonces FORCE ROW LEVEL SECURITY;
CREATE POLICY peer_nonces_definer_only ON peer_nonces
    USING (current_user <> 'mosaic_app') WITH CHECK (current_user <> 'mosaic_app');
