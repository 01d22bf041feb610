-- A peer's token bucket (0079) refilled by the time since its last request,
-- read at the start of each admission. Two requests admitted at once read
-- their clocks in one order and reach the bucket's row in the other: the
-- second to commit then found the bucket's time after its own, refilled by
-- a negative time, and was refused as over the limit (at 100,000 requests
-- a second, a few milliseconds' overlap cost hundreds of tokens, and the
-- peer waited a whole second on Retry-After). The time between is now never
-- negative, and the bucket's time never moves back.

CREATE OR REPLACE FUNCTION admit_peer_request(
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
        SET tokens = least(p_burst, b.tokens + p_rate * greatest(extract(epoch FROM t - b.at), 0)) - 1,
            at = greatest(t, b.at)
        WHERE least(p_burst, b.tokens + p_rate * greatest(extract(epoch FROM t - b.at), 0)) >= 1;
    IF NOT FOUND THEN
        SELECT least(p_burst, b.tokens + p_rate * greatest(extract(epoch FROM t - b.at), 0)) INTO have
        FROM peer_rate_buckets b WHERE b.origin = p_origin;
        outcome := 'limited';
        retry_after_ms := ceil(greatest(1 - coalesce(have, 0), 0) / p_rate * 1000)::bigint;
    END IF;
END
$$;
