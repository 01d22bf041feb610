-- Issue 17: beside the counts of migration 0073, each peer's last failure
-- (when, and its code and message) and the state of its circuit breaker as
-- the replica that flushed last saw it, so that `mosaic federation status`
-- (another process) can show them. Each replica keeps its own breaker; the
-- shared value is the latest one flushed, with the time it was flushed.
ALTER TABLE peer_contacts
    ADD COLUMN last_failure timestamptz,
    ADD COLUMN last_error text,
    ADD COLUMN breaker_state text CHECK (breaker_state IN ('closed', 'open', 'half_open')),
    ADD COLUMN breaker_at timestamptz;

DROP FUNCTION peer_contacts_add(uuid, bigint, bigint, timestamptz, integer[], integer);
DROP FUNCTION peer_contacts_of(uuid);

-- Adds one replica's counts since its last report (nothing for a peer
-- that no longer exists); the last error is bounded to 500 characters.
CREATE FUNCTION peer_contacts_add(
    p_peer uuid, p_successes bigint, p_errors bigint, p_last_contact timestamptz,
    p_latency_ms integer[], p_keep integer,
    p_last_failure timestamptz, p_last_error text, p_breaker_state text
) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    INSERT INTO peer_contacts AS c (peer_id, successes, errors, last_contact, recent_latency_ms,
                                    last_failure, last_error, breaker_state, breaker_at)
    SELECT p_peer, p_successes, p_errors, p_last_contact,
           p_latency_ms[greatest(1, cardinality(p_latency_ms) - p_keep + 1):],
           p_last_failure, left(p_last_error, 500), p_breaker_state,
           CASE WHEN p_breaker_state IS NOT NULL THEN clock_timestamp() END
    FROM peers WHERE id = p_peer
    ON CONFLICT (peer_id) DO UPDATE SET
        successes = c.successes + excluded.successes,
        errors = c.errors + excluded.errors,
        last_contact = greatest(c.last_contact, excluded.last_contact),
        recent_latency_ms = (c.recent_latency_ms || p_latency_ms)
            [greatest(1, cardinality(c.recent_latency_ms || p_latency_ms) - p_keep + 1):],
        last_failure = greatest(c.last_failure, excluded.last_failure),
        last_error = CASE WHEN excluded.last_failure >= c.last_failure OR c.last_failure IS NULL
                          THEN coalesce(excluded.last_error, c.last_error) ELSE c.last_error END,
        breaker_state = coalesce(excluded.breaker_state, c.breaker_state),
        breaker_at = coalesce(excluded.breaker_at, c.breaker_at);
$$;

CREATE FUNCTION peer_contacts_of(p_peer uuid)
RETURNS TABLE (successes bigint, errors bigint, last_contact timestamptz, recent_latency_ms integer[],
               last_failure timestamptz, last_error text, breaker_state text, breaker_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT successes, errors, last_contact, recent_latency_ms, last_failure, last_error, breaker_state, breaker_at
    FROM peer_contacts WHERE peer_id = p_peer;
$$;

REVOKE ALL ON FUNCTION
    peer_contacts_add(uuid, bigint, bigint, timestamptz, integer[], integer, timestamptz, text, text),
    peer_contacts_of(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    peer_contacts_add(uuid, bigint, bigint, timestamptz, integer[], integer, timestamptz, text, text),
    peer_contacts_of(uuid) TO mosaic_app;
