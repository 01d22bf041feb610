-- Rate limits on peers' requests (issue 16): a token bucket per peer, shared
-- by every replica of this instance. Taken in the same round trip as the
-- request's nonce (admit_peer_request), so a limit costs no extra trip to
-- the database: the nonce first, so a replayed request spends no token.

CREATE TABLE peer_rate_buckets (
    origin text PRIMARY KEY,
    tokens double precision NOT NULL,
    at timestamptz NOT NULL
);

-- 'new', 'replayed' or 'expired' as record_peer_nonce says (its commit
-- likewise does not wait for the disk), or 'limited' with the milliseconds
-- until a token is free. p_rate NULL: no limit (only the nonce).
CREATE FUNCTION admit_peer_request(
    p_origin text, p_nonce text, p_keep_until bigint, p_rate double precision, p_burst double precision,
    OUT outcome text, OUT retry_after_ms bigint)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    t timestamptz := clock_timestamp();
    have double precision;
BEGIN
    outcome := record_peer_nonce(p_origin, p_nonce, p_keep_until);
    IF outcome <> 'new' OR p_rate IS NULL THEN
        RETURN;
    END IF;
    INSERT INTO peer_rate_buckets AS b (origin, tokens, at) VALUES (p_origin, p_burst - 1, t)
    ON CONFLICT (origin) DO UPDATE
        SET tokens = least(p_burst, b.tokens + p_rate * extract(epoch FROM t - b.at)) - 1, at = t
        WHERE least(p_burst, b.tokens + p_rate * extract(epoch FROM t - b.at)) >= 1;
    IF NOT FOUND THEN
        SELECT least(p_burst, b.tokens + p_rate * extract(epoch FROM t - b.at)) INTO have
        FROM peer_rate_buckets b WHERE b.origin = p_origin;
        outcome := 'limited';
        retry_after_ms := ceil(greatest(1 - coalesce(have, 0), 0) / p_rate * 1000)::bigint;
    END IF;
END
$$;

REVOKE ALL ON FUNCTION admit_peer_request(text, text, bigint, double precision, double precision) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION admit_peer_request(text, text, bigint, double precision, double precision) TO mosaic_app;

ALTER TABLE peer_rate_buckets ENABLE ROW LEVEL SECURITY;
ALTER TABLE peer_rate_buckets FORCE ROW LEVEL SECURITY;
CREATE POLICY peer_rate_buckets_definer_only ON peer_rate_buckets
    USING (current_user <> 'mosaic_app') WITH CHECK (current_user <> 'mosaic_app');
