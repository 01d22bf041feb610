-- A peer request's admission ran three PL/pgSQL functions deep
-- (admit_peer_request_or_refuse, admit_peer_request, record_peer_nonce),
-- each SECURITY DEFINER with its own search_path. Calling them cost about
-- as much as their two writes: in the demo chain, pg_stat_statements gave
-- 0.31 ms per admission, of which the nonce's insert took 0.07 and the
-- bucket's 0.07. Now one function does all of it, the same way (0070,
-- 0079, 0085, 0086), and every admission calls it: the other two are gone.
--
-- Refusals raise SQLSTATE MSADM with the outcome as the message
-- ('expired', 'replayed', 'limited') and, when limited, the milliseconds
-- until a token is free as the detail; the refusal rolls back the nonce.

CREATE OR REPLACE FUNCTION admit_peer_request_or_refuse(
    p_origin text, p_nonce text, p_keep_until bigint, p_rate double precision, p_burst double precision)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    -- Read first: a request that waits for the bucket is not charged for the wait (0085).
    t timestamptz := clock_timestamp();
    have double precision;
BEGIN
    -- Its commit does not wait for the disk (0070).
    PERFORM set_config('synchronous_commit', 'off', true);
    IF p_keep_until < extract(epoch FROM t) THEN
        RAISE EXCEPTION USING ERRCODE = 'MSADM', MESSAGE = 'expired';
    END IF;
    INSERT INTO peer_nonces (origin, nonce, keep_until) VALUES (p_origin, p_nonce, p_keep_until)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'MSADM', MESSAGE = 'replayed';
    END IF;
    IF p_rate IS NULL THEN
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
        RAISE EXCEPTION USING ERRCODE = 'MSADM', MESSAGE = 'limited',
            DETAIL = ceil(greatest(1 - coalesce(have, 0), 0) / p_rate * 1000)::bigint::text;
    END IF;
END
$$;

DROP FUNCTION admit_peer_request(text, text, bigint, double precision, double precision);
DROP FUNCTION record_peer_nonce(text, text, bigint);
