-- Issue 18: a circuit breaker one replica opened is open on all of them.
-- Each replica keeps its own breakers (issue 17) and, every few seconds,
-- reports which of them are open and until when, and opens those another
-- replica opened for what remains of their cooldown. The database's clock
-- decides: times travel as milliseconds remaining.
ALTER TABLE peer_contacts ADD COLUMN breaker_open_until timestamptz;

CREATE FUNCTION peer_breakers_share(p_open uuid[], p_remaining_ms bigint[])
RETURNS TABLE (peer_id uuid, remaining_ms bigint)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    INSERT INTO peer_contacts AS c (peer_id, successes, errors, recent_latency_ms, breaker_open_until)
    SELECT o.peer, 0, 0, '{}', clock_timestamp() + make_interval(secs => o.ms / 1000.0)
    FROM unnest(p_open, p_remaining_ms) AS o(peer, ms) JOIN peers ON peers.id = o.peer
    ON CONFLICT ON CONSTRAINT peer_contacts_pkey DO UPDATE
        SET breaker_open_until = greatest(c.breaker_open_until, excluded.breaker_open_until);
    RETURN QUERY
        SELECT c.peer_id, ceil(extract(epoch FROM c.breaker_open_until - clock_timestamp()) * 1000)::bigint
        FROM peer_contacts c WHERE c.breaker_open_until > clock_timestamp();
END
$$;

REVOKE ALL ON FUNCTION peer_breakers_share(uuid[], bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION peer_breakers_share(uuid[], bigint[]) TO mosaic_app;
