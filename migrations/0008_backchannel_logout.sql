-- OpenID Connect Back-Channel Logout: the provider tells us a user signed
-- out there (or was signed out), naming the subject and/or the provider's
-- session id (`sid`, from the ID token). Sessions keep that sid.
ALTER TABLE sessions ADD COLUMN oidc_sid text;
CREATE INDEX sessions_oidc_sid ON sessions (oidc_sid) WHERE oidc_sid IS NOT NULL;

DROP FUNCTION session_create(bytea, uuid, text, text, text, integer);
CREATE FUNCTION session_create(h bytea, uid uuid, csrf text, how text, idt text, ttl_s integer, sid text)
RETURNS timestamptz
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    DELETE FROM sessions WHERE expires_at < now() - interval '1 day';
    INSERT INTO sessions (id_hash, user_id, csrf_token, method, id_token, expires_at, oidc_sid)
    VALUES (h, uid, csrf, how, idt, now() + make_interval(secs => ttl_s), sid)
    RETURNING expires_at;
$$;

-- Ends the SSO sessions a verified logout token names: of users linked to
-- `iss` (and to `sub` when given), with provider session `sid` when given.
-- Break-glass sessions are never touched. Returns the users signed out.
CREATE FUNCTION session_end_by_provider(iss text, sub text, sid text)
RETURNS TABLE (user_id uuid)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    DELETE FROM sessions s
    WHERE s.method = 'oidc'
      AND (sid IS NULL OR s.oidc_sid = sid)
      AND s.user_id IN (SELECT i.user_id FROM user_identities i
                        WHERE i.issuer = iss AND (sub IS NULL OR i.subject = sub))
    RETURNING s.user_id
$$;

REVOKE ALL ON FUNCTION session_create(bytea, uuid, text, text, text, integer, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION session_end_by_provider(text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION session_create(bytea, uuid, text, text, text, integer, text) TO mosaic_app;
GRANT EXECUTE ON FUNCTION session_end_by_provider(text, text, text) TO mosaic_app;
