-- Break-glass login attempts per account (normalised e-mail), shared by
-- every replica of this instance (issue 18), so the throttle holds whichever
-- replica a guess reaches. The policy (free attempts, doubling waits) is the
-- application's (src/auth/throttle.rs); this keeps its state. The request
-- role reaches it only through these functions: the accounts typed at the
-- login are not for it to list.
CREATE TABLE breakglass_attempts (
    account text PRIMARY KEY,
    attempts integer NOT NULL,
    last_at timestamptz NOT NULL
);
CREATE INDEX breakglass_attempts_last_at ON breakglass_attempts (last_at);

-- Locks the account until the caller's transaction ends (parallel guesses
-- queue here, so none slips in before another is counted) and returns its
-- attempts and the milliseconds since the last, by the database's clock.
CREATE FUNCTION breakglass_attempts_take(p_account text)
RETURNS TABLE (attempts integer, since_last_ms bigint)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('mosaic.breakglass'), hashtext(p_account));
    RETURN QUERY
        SELECT a.attempts, (extract(epoch FROM clock_timestamp() - a.last_at) * 1000)::bigint
        FROM breakglass_attempts a WHERE a.account = p_account;
END
$$;

-- Counts an attempt starting now; forgets accounts quiet for `p_window_s`.
CREATE FUNCTION breakglass_attempts_count(p_account text, p_attempts integer, p_window_s integer) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    DELETE FROM breakglass_attempts
    WHERE last_at < clock_timestamp() - make_interval(secs => p_window_s) AND account <> p_account;
    INSERT INTO breakglass_attempts (account, attempts, last_at) VALUES (p_account, p_attempts, clock_timestamp())
    ON CONFLICT (account) DO UPDATE SET attempts = excluded.attempts, last_at = excluded.last_at;
$$;

-- The attempt ended: a failure restarts the wait from now, a success forgets the account.
CREATE FUNCTION breakglass_attempts_end(p_account text, p_succeeded boolean) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    DELETE FROM breakglass_attempts WHERE account = p_account AND p_succeeded;
    UPDATE breakglass_attempts SET last_at = greatest(last_at, clock_timestamp())
    WHERE account = p_account AND NOT p_succeeded;
$$;

REVOKE ALL ON FUNCTION breakglass_attempts_take(text), breakglass_attempts_count(text, integer, integer),
    breakglass_attempts_end(text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION breakglass_attempts_take(text), breakglass_attempts_count(text, integer, integer),
    breakglass_attempts_end(text, boolean) TO mosaic_app;

-- RLS forced like every table's: the request role has no grant and no
-- policy admits it; the definer functions above run as the table's owner.
ALTER TABLE breakglass_attempts ENABLE ROW LEVEL SECURITY;
ALTER TABLE breakglass_attempts FORCE ROW LEVEL SECURITY;
CREATE POLICY breakglass_attempts_definer_only ON breakglass_attempts
    USING (current_user <> 'mosaic_app') WITH CHECK (current_user <> 'mosaic_app');
