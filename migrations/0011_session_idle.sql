-- Sessions also end after a period without use (`session.idle_timeout_s`),
-- besides their fixed expiry. Use is written at most once a minute, so a
-- busy session costs no write per request.
ALTER TABLE sessions ADD COLUMN last_seen_at timestamptz NOT NULL DEFAULT now();

DROP FUNCTION session_authenticate(bytea);
CREATE FUNCTION session_authenticate(h bytea, idle_s integer)
RETURNS TABLE (user_id uuid, email text, name text, is_admin boolean, email_verified boolean,
               csrf_token text, expires_at timestamptz, expired boolean, deactivated boolean,
               public_id uuid, idle boolean)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    WITH used AS (
        UPDATE sessions SET last_seen_at = now()
        WHERE id_hash = h
          AND last_seen_at < now() - interval '1 minute'
          AND expires_at > now()
          AND (idle_s <= 0 OR last_seen_at >= now() - make_interval(secs => idle_s))
    )
    SELECT u.id, u.email, u.name, u.is_admin, u.email_verified, s.csrf_token, s.expires_at,
           s.expires_at <= now(), u.deactivated_at IS NOT NULL, s.public_id,
           idle_s > 0 AND s.last_seen_at < now() - make_interval(secs => idle_s)
    FROM sessions s JOIN users u ON u.id = s.user_id
    WHERE s.id_hash = h
$$;

DROP FUNCTION my_sessions();
CREATE FUNCTION my_sessions()
RETURNS TABLE (public_id uuid, method text, created_at timestamptz, expires_at timestamptz,
               last_seen_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT s.public_id, s.method, s.created_at, s.expires_at, s.last_seen_at
    FROM sessions s
    WHERE s.user_id = current_user_id() AND s.expires_at > now()
    ORDER BY s.created_at DESC, s.public_id
$$;

REVOKE ALL ON FUNCTION session_authenticate(bytea, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION my_sessions() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION session_authenticate(bytea, integer) TO mosaic_app;
GRANT EXECUTE ON FUNCTION my_sessions() TO mosaic_app;
