-- Two per-peer counters shared by every replica of this instance (issue 18),
-- so they hold whichever replica a request reaches. Not tenant data: the
-- request role reaches them only through the definer functions below.

-- CONNECT requests per source address within the last minute. Each replica
-- bounds in memory how many sources it passes on, so this table stays small.
CREATE TABLE connect_attempts (
    source inet NOT NULL,
    at timestamptz NOT NULL
);
CREATE INDEX connect_attempts_source ON connect_attempts (source);
CREATE INDEX connect_attempts_at ON connect_attempts (at);

-- Whether `p_source` may send one more CONNECT now (at most `p_per_minute`
-- a minute across all replicas); counts it when it may. Attempts from one
-- source queue on its lock, so none slips in before another is counted.
CREATE FUNCTION connect_attempt(p_source inet, p_per_minute integer) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('mosaic.connect'), hashtext(host(p_source)));
    DELETE FROM connect_attempts WHERE at < clock_timestamp() - interval '1 minute';
    IF (SELECT count(*) FROM connect_attempts WHERE source = p_source) >= p_per_minute THEN
        RETURN false;
    END IF;
    INSERT INTO connect_attempts (source, at) VALUES (p_source, clock_timestamp());
    RETURN true;
END
$$;

-- Our requests to each peer: successes, errors, the last success and the
-- latest latencies. A replica counts in memory and adds what it counted
-- here every few seconds, off the request path.
CREATE TABLE peer_contacts (
    peer_id uuid PRIMARY KEY REFERENCES peers (id) ON DELETE CASCADE,
    successes bigint NOT NULL,
    errors bigint NOT NULL,
    last_contact timestamptz,
    -- Oldest first; at most `p_keep` (the function's argument).
    recent_latency_ms integer[] NOT NULL
);

-- Adds one replica's counts since its last report (nothing for a peer
-- that no longer exists).
CREATE FUNCTION peer_contacts_add(
    p_peer uuid, p_successes bigint, p_errors bigint, p_last_contact timestamptz,
    p_latency_ms integer[], p_keep integer
) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    INSERT INTO peer_contacts AS c (peer_id, successes, errors, last_contact, recent_latency_ms)
    SELECT p_peer, p_successes, p_errors, p_last_contact,
           p_latency_ms[greatest(1, cardinality(p_latency_ms) - p_keep + 1):]
    FROM peers WHERE id = p_peer
    ON CONFLICT (peer_id) DO UPDATE SET
        successes = c.successes + excluded.successes,
        errors = c.errors + excluded.errors,
        last_contact = greatest(c.last_contact, excluded.last_contact),
        recent_latency_ms = (c.recent_latency_ms || p_latency_ms)
            [greatest(1, cardinality(c.recent_latency_ms || p_latency_ms) - p_keep + 1):];
$$;

CREATE FUNCTION peer_contacts_of(p_peer uuid)
RETURNS TABLE (successes bigint, errors bigint, last_contact timestamptz, recent_latency_ms integer[])
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT successes, errors, last_contact, recent_latency_ms FROM peer_contacts WHERE peer_id = p_peer;
$$;

REVOKE ALL ON FUNCTION connect_attempt(inet, integer),
    peer_contacts_add(uuid, bigint, bigint, timestamptz, integer[], integer),
    peer_contacts_of(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION connect_attempt(inet, integer),
    peer_contacts_add(uuid, bigint, bigint, timestamptz, integer[], integer),
    peer_contacts_of(uuid) TO mosaic_app;

-- RLS forced like every table's: no policy admits the request role; the
-- definer functions above run as the tables' owner.
ALTER TABLE connect_attempts ENABLE ROW LEVEL SECURITY;
ALTER TABLE connect_attempts FORCE ROW LEVEL SECURITY;
CREATE POLICY connect_attempts_definer_only ON connect_attempts
    USING (current_user <> 'mosaic_app') WITH CHECK (current_user <> 'mosaic_app');
ALTER TABLE peer_contacts ENABLE ROW LEVEL SECURITY;
ALTER TABLE peer_contacts FORCE ROW LEVEL SECURITY;
CREATE POLICY peer_contacts_definer_only ON peer_contacts
    USING (current_user <> 'mosaic_app') WITH CHECK (current_user <> 'mosaic_app');
