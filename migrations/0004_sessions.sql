-- Single sign-on (OpenID Connect), browser sessions, break-glass admins and
-- the audit of authentication events.
--
-- Like api_tokens, the session and credential tables have no policy and no
-- grant: the application role reaches them only through the narrow SECURITY
-- DEFINER functions below. Sessions and pending logins are stored by the
-- SHA-256 of their random id, never the id itself.

-- The stable link between a provider's subject and a local user.
CREATE TABLE user_identities (
    issuer             text NOT NULL,
    subject            text NOT NULL,
    user_id            uuid NOT NULL REFERENCES users ON DELETE CASCADE,
    preferred_username text,
    groups             text[] NOT NULL DEFAULT '{}',
    email_verified     boolean NOT NULL DEFAULT false,
    created_at         timestamptz NOT NULL DEFAULT now(),
    last_login_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (issuer, subject)
);
CREATE INDEX user_identities_user ON user_identities (user_id);

-- A login under way: state, nonce and PKCE verifier until the callback (single use).
CREATE TABLE oidc_logins (
    id_hash       bytea PRIMARY KEY,
    state         text NOT NULL,
    nonce         text NOT NULL,
    pkce_verifier text NOT NULL,
    return_to     text NOT NULL,
    expires_at    timestamptz NOT NULL
);

CREATE TABLE sessions (
    id_hash    bytea PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users ON DELETE CASCADE,
    csrf_token text NOT NULL,
    method     text NOT NULL CHECK (method IN ('oidc', 'breakglass')),
    id_token   text,  -- the provider's ID token, as id_token_hint at logout
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expiry ON sessions (expires_at);

-- Local passwords (argon2 PHC strings) of break-glass administrators.
CREATE TABLE local_credentials (
    user_id       uuid PRIMARY KEY REFERENCES users ON DELETE CASCADE,
    password_hash text NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE auth_audit (
    id      bigserial PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    user_id uuid,
    email   text,
    action  text NOT NULL,
    details jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX auth_audit_user ON auth_audit (user_id, id);

ALTER TABLE user_identities ENABLE ROW LEVEL SECURITY;
ALTER TABLE user_identities FORCE ROW LEVEL SECURITY;
ALTER TABLE oidc_logins ENABLE ROW LEVEL SECURITY;
ALTER TABLE oidc_logins FORCE ROW LEVEL SECURITY;
ALTER TABLE sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE sessions FORCE ROW LEVEL SECURITY;
ALTER TABLE local_credentials ENABLE ROW LEVEL SECURITY;
ALTER TABLE local_credentials FORCE ROW LEVEL SECURITY;
ALTER TABLE auth_audit ENABLE ROW LEVEL SECURITY;
ALTER TABLE auth_audit FORCE ROW LEVEL SECURITY;

-- Audit rows are written by the functions below; nobody reads them through the app.

CREATE FUNCTION auth_audit_write(uid uuid, addr text, what text, info jsonb) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    INSERT INTO auth_audit (user_id, email, action, details) VALUES (uid, addr, what, coalesce(info, '{}'))
$$;

CREATE FUNCTION oidc_login_begin(h bytea, st text, n text, verifier text, back text, ttl_s integer)
RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    DELETE FROM oidc_logins WHERE expires_at < now();
    INSERT INTO oidc_logins (id_hash, state, nonce, pkce_verifier, return_to, expires_at)
    VALUES (h, st, n, verifier, back, now() + make_interval(secs => ttl_s));
$$;

-- Takes (and so consumes) a pending login; nothing when unknown or expired.
CREATE FUNCTION oidc_login_take(h bytea)
RETURNS TABLE (state text, nonce text, pkce_verifier text, return_to text)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    WITH taken AS (DELETE FROM oidc_logins WHERE id_hash = h RETURNING *)
    SELECT state, nonce, pkce_verifier, return_to FROM taken WHERE expires_at > now()
$$;

-- First login creates the user; later logins update the claims. The link is
-- (issuer, subject); an existing local user with the same e-mail is linked
-- only when the provider says the address is verified. admin: NULL leaves
-- is_admin alone (no admin group configured). Mapped workspace roles are
-- added where the user has no membership yet.
CREATE FUNCTION sso_upsert_user(
    iss text, sub text, addr text, verified boolean, display_name text, username text,
    member_of text[], admin boolean, ws_ids uuid[], ws_roles text[]
) RETURNS TABLE (linked_user uuid, created boolean)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    uid uuid;
    fresh boolean := false;
BEGIN
    SELECT i.user_id INTO uid FROM user_identities i WHERE i.issuer = iss AND i.subject = sub;
    IF uid IS NULL THEN
        SELECT u.id INTO uid FROM users u WHERE u.email = lower(addr);
        IF uid IS NOT NULL AND NOT verified THEN
            RAISE EXCEPTION 'a local user has this e-mail and the provider has not verified it'
                USING ERRCODE = 'MOS41';
        END IF;
        IF uid IS NULL THEN
            uid := gen_random_uuid();
            fresh := true;
            INSERT INTO users (id, email, name, is_admin)
            VALUES (uid, lower(addr), display_name, coalesce(admin, false));
        END IF;
        INSERT INTO user_identities (issuer, subject, user_id) VALUES (iss, sub, uid);
    END IF;
    UPDATE users SET email = lower(addr), name = display_name,
                     is_admin = coalesce(admin, is_admin), updated_at = now()
    WHERE id = uid;
    UPDATE user_identities SET preferred_username = username, groups = coalesce(member_of, '{}'),
                               email_verified = verified, last_login_at = now()
    WHERE issuer = iss AND subject = sub;
    INSERT INTO workspace_members (workspace_id, user_id, role)
    SELECT w.id, uid, r.role
    FROM unnest(ws_ids, ws_roles) AS r(ws, role) JOIN workspaces w ON w.id = r.ws
    ON CONFLICT DO NOTHING;
    RETURN QUERY SELECT uid, fresh;
END $$;

CREATE FUNCTION session_create(h bytea, uid uuid, csrf text, how text, idt text, ttl_s integer)
RETURNS timestamptz
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    DELETE FROM sessions WHERE expires_at < now() - interval '1 day';
    INSERT INTO sessions (id_hash, user_id, csrf_token, method, id_token, expires_at)
    VALUES (h, uid, csrf, how, idt, now() + make_interval(secs => ttl_s))
    RETURNING expires_at;
$$;

CREATE FUNCTION session_authenticate(h bytea)
RETURNS TABLE (user_id uuid, email text, name text, is_admin boolean, csrf_token text,
               expires_at timestamptz, expired boolean)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT u.id, u.email, u.name, u.is_admin, s.csrf_token, s.expires_at, s.expires_at <= now()
    FROM sessions s JOIN users u ON u.id = s.user_id
    WHERE s.id_hash = h
$$;

-- Ends a session; returns its ID token (for the provider's logout) if any.
CREATE FUNCTION session_end(h bytea) RETURNS TABLE (user_id uuid, id_token text)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    DELETE FROM sessions WHERE id_hash = h RETURNING user_id, id_token
$$;

CREATE FUNCTION breakglass_credential(addr text)
RETURNS TABLE (user_id uuid, email text, name text, is_admin boolean, password_hash text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT u.id, u.email, u.name, u.is_admin, c.password_hash
    FROM local_credentials c JOIN users u ON u.id = c.user_id
    WHERE u.email = lower(addr)
$$;

REVOKE ALL ON FUNCTION auth_audit_write(uuid, text, text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION oidc_login_begin(bytea, text, text, text, text, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION oidc_login_take(bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION sso_upsert_user(text, text, text, boolean, text, text, text[], boolean, uuid[], text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION session_create(bytea, uuid, text, text, text, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION session_authenticate(bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION session_end(bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION breakglass_credential(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION auth_audit_write(uuid, text, text, jsonb) TO mosaic_app;
GRANT EXECUTE ON FUNCTION oidc_login_begin(bytea, text, text, text, text, integer) TO mosaic_app;
GRANT EXECUTE ON FUNCTION oidc_login_take(bytea) TO mosaic_app;
GRANT EXECUTE ON FUNCTION sso_upsert_user(text, text, text, boolean, text, text, text[], boolean, uuid[], text[]) TO mosaic_app;
GRANT EXECUTE ON FUNCTION session_create(bytea, uuid, text, text, text, integer) TO mosaic_app;
GRANT EXECUTE ON FUNCTION session_authenticate(bytea) TO mosaic_app;
GRANT EXECUTE ON FUNCTION session_end(bytea) TO mosaic_app;
GRANT EXECUTE ON FUNCTION breakglass_credential(text) TO mosaic_app;
