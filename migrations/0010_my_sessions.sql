-- People see where they are signed in and end sessions themselves: each
-- session gets a public id (the cookie's hash stays the private key), and
-- definer functions act on the caller's own sessions only.
ALTER TABLE sessions ADD COLUMN public_id uuid NOT NULL DEFAULT gen_random_uuid();
CREATE UNIQUE INDEX sessions_public_id ON sessions (public_id);

DROP FUNCTION session_authenticate(bytea);
CREATE FUNCTION session_authenticate(h bytea)
RETURNS TABLE (user_id uuid, email text, name text, is_admin boolean, email_verified boolean,
               csrf_token text, expires_at timestamptz, expired boolean, deactivated boolean,
               public_id uuid)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT u.id, u.email, u.name, u.is_admin, u.email_verified, s.csrf_token, s.expires_at,
           s.expires_at <= now(), u.deactivated_at IS NOT NULL, s.public_id
    FROM sessions s JOIN users u ON u.id = s.user_id
    WHERE s.id_hash = h
$$;

-- The caller's sessions that have not expired, newest first.
CREATE FUNCTION my_sessions()
RETURNS TABLE (public_id uuid, method text, created_at timestamptz, expires_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT s.public_id, s.method, s.created_at, s.expires_at
    FROM sessions s
    WHERE s.user_id = current_user_id() AND s.expires_at > now()
    ORDER BY s.created_at DESC, s.public_id
$$;

-- Ends the caller's sessions: the one named `target_id`, or every one but `keep_id`
-- (NULL: all). Audited; returns how many ended.
CREATE FUNCTION my_sessions_end(target_id uuid, keep_id uuid) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    ended integer;
BEGIN
    DELETE FROM sessions s
    WHERE s.user_id = current_user_id()
      AND (target_id IS NULL OR s.public_id = target_id)
      AND (keep_id IS NULL OR s.public_id <> keep_id);
    GET DIAGNOSTICS ended = ROW_COUNT;
    IF ended > 0 THEN
        INSERT INTO auth_audit (user_id, email, action, details)
        SELECT u.id, u.email, 'sessions_ended', jsonb_build_object('sessions', ended, 'by', 'self')
        FROM users u WHERE u.id = current_user_id();
    END IF;
    RETURN ended;
END $$;

REVOKE ALL ON FUNCTION session_authenticate(bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION my_sessions() FROM PUBLIC;
REVOKE ALL ON FUNCTION my_sessions_end(uuid, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION session_authenticate(bytea) TO mosaic_app;
GRANT EXECUTE ON FUNCTION my_sessions() TO mosaic_app;
GRANT EXECUTE ON FUNCTION my_sessions_end(uuid, uuid) TO mosaic_app;
