-- The session check (0011) wrote last use from inside the check, so every
-- request ran an UPDATE, most of them matching nothing. It is a plain read
-- again; the server records use with session_touch when the read says the
-- last record is over a minute old.
DROP FUNCTION session_authenticate(bytea, integer);
CREATE FUNCTION session_authenticate(h bytea, idle_s integer)
RETURNS TABLE (user_id uuid, email text, name text, is_admin boolean, email_verified boolean,
               csrf_token text, expires_at timestamptz, expired boolean, deactivated boolean,
               public_id uuid, idle boolean, stale_use boolean)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT u.id, u.email, u.name, u.is_admin, u.email_verified, s.csrf_token, s.expires_at,
           s.expires_at <= now(), u.deactivated_at IS NOT NULL, s.public_id,
           idle_s > 0 AND s.last_seen_at < now() - make_interval(secs => idle_s),
           s.last_seen_at < now() - interval '1 minute'
    FROM sessions s JOIN users u ON u.id = s.user_id
    WHERE s.id_hash = h
$$;

-- Records that a session was used (at most once a minute).
CREATE FUNCTION session_touch(h bytea) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    UPDATE sessions SET last_seen_at = now()
    WHERE id_hash = h AND last_seen_at < now() - interval '1 minute'
$$;

REVOKE ALL ON FUNCTION session_authenticate(bytea, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION session_touch(bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION session_authenticate(bytea, integer) TO mosaic_app;
GRANT EXECUTE ON FUNCTION session_touch(bytea) TO mosaic_app;
