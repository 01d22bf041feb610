-- Instance administration of users (list, make or unmake administrators,
-- deactivate and reactivate), and whether a user's e-mail address is
-- verified: only a verified address is named to peers (the federation
-- envelope's actor), since peers may grant access by address.
--
-- Users created by an operator (`mosaic user create`, `mosaic admin create`)
-- are vouched for by that operator; users created by single sign-on carry
-- the provider's `email_verified` claim, refreshed at every login.

ALTER TABLE users ADD COLUMN email_verified boolean NOT NULL DEFAULT true;
ALTER TABLE users ADD COLUMN deactivated_at timestamptz;

UPDATE users u SET email_verified = i.email_verified
FROM user_identities i WHERE i.user_id = u.id;

-- A deactivated user's credentials stop working at once; their data stays.
-- The functions below report `deactivated` so callers can say why.

DROP FUNCTION authenticate_token(bytea);
CREATE FUNCTION authenticate_token(hash bytea)
RETURNS TABLE (user_id uuid, email text, name text, is_admin boolean, email_verified boolean,
               expired boolean, deactivated boolean)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    WITH touched AS (  -- at most one write a minute per token, not one per request
        UPDATE api_tokens SET last_used_at = now()
        WHERE token_hash = hash AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')
    )
    SELECT u.id, u.email, u.name, u.is_admin, u.email_verified,
           (t.expires_at IS NOT NULL AND t.expires_at <= now()), u.deactivated_at IS NOT NULL
    FROM api_tokens t JOIN users u ON u.id = t.user_id
    WHERE t.token_hash = hash
$$;

DROP FUNCTION session_authenticate(bytea);
CREATE FUNCTION session_authenticate(h bytea)
RETURNS TABLE (user_id uuid, email text, name text, is_admin boolean, email_verified boolean,
               csrf_token text, expires_at timestamptz, expired boolean, deactivated boolean)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT u.id, u.email, u.name, u.is_admin, u.email_verified, s.csrf_token, s.expires_at,
           s.expires_at <= now(), u.deactivated_at IS NOT NULL
    FROM sessions s JOIN users u ON u.id = s.user_id
    WHERE s.id_hash = h
$$;

DROP FUNCTION breakglass_credential(text);
CREATE FUNCTION breakglass_credential(addr text)
RETURNS TABLE (user_id uuid, email text, name text, is_admin boolean, email_verified boolean,
               password_hash text, deactivated boolean)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT u.id, u.email, u.name, u.is_admin, u.email_verified, c.password_hash,
           u.deactivated_at IS NOT NULL
    FROM local_credentials c JOIN users u ON u.id = c.user_id
    WHERE u.email = lower(addr)
$$;

-- As in 0004, plus: the verified flag follows the provider, and a
-- deactivated user is refused (MOS42) before anything changes.
CREATE OR REPLACE FUNCTION sso_upsert_user(
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
            INSERT INTO users (id, email, name, is_admin, email_verified)
            VALUES (uid, lower(addr), display_name, coalesce(admin, false), verified);
        END IF;
        INSERT INTO user_identities (issuer, subject, user_id) VALUES (iss, sub, uid);
    END IF;
    IF EXISTS (SELECT 1 FROM users u WHERE u.id = uid AND u.deactivated_at IS NOT NULL) THEN
        RAISE EXCEPTION 'this account is deactivated' USING ERRCODE = 'MOS42';
    END IF;
    UPDATE users SET email = lower(addr), name = display_name, email_verified = verified,
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

-- ---------------------------------------------------------------------------
-- User administration. The application checks the caller is an instance
-- administrator; these functions check it again (the caller is the scope's
-- user), so no other path reaches every user.
-- ---------------------------------------------------------------------------

CREATE FUNCTION admin_require() RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM users WHERE id = current_user_id() AND is_admin AND deactivated_at IS NULL) THEN
        RAISE EXCEPTION 'only instance administrators may do this' USING ERRCODE = '42501';
    END IF;
END $$;

CREATE FUNCTION admin_users()
RETURNS TABLE (id uuid, email text, name text, is_admin boolean, email_verified boolean,
               deactivated_at timestamptz, created_at timestamptz, last_login_at timestamptz,
               sso_groups text[])
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    PERFORM admin_require();
    RETURN QUERY
    SELECT u.id, u.email, u.name, u.is_admin, u.email_verified, u.deactivated_at, u.created_at,
           (SELECT max(i.last_login_at) FROM user_identities i WHERE i.user_id = u.id),
           coalesce((SELECT array_agg(DISTINCT g ORDER BY g) FROM user_identities i, unnest(i.groups) g
                     WHERE i.user_id = u.id), '{}')
    FROM users u
    ORDER BY u.email;
END $$;

-- Who changed whom, in the authentication audit.
CREATE FUNCTION admin_audit(target uuid, what text) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    INSERT INTO auth_audit (user_id, email, action, details)
    SELECT u.id, u.email, what,
           jsonb_build_object('by', current_user_id(), 'by_email', (SELECT email FROM users WHERE id = current_user_id()))
    FROM users u WHERE u.id = target
$$;

-- The last active administrator cannot be demoted or deactivated: nobody
-- could undo it through the API.
CREATE FUNCTION admin_keep_one(target uuid) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    PERFORM 1 FROM users WHERE is_admin AND deactivated_at IS NULL FOR UPDATE;
    IF NOT EXISTS (SELECT 1 FROM users WHERE is_admin AND deactivated_at IS NULL AND id <> target) THEN
        RAISE EXCEPTION 'this is the last active instance administrator' USING ERRCODE = 'MOS43';
    END IF;
END $$;

CREATE FUNCTION admin_set_user_admin(target uuid, admin boolean) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    PERFORM admin_require();
    IF NOT admin THEN
        PERFORM admin_keep_one(target);
    END IF;
    UPDATE users SET is_admin = admin, updated_at = now() WHERE id = target;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM admin_audit(target, CASE WHEN admin THEN 'admin_granted' ELSE 'admin_revoked' END);
    RETURN true;
END $$;

-- Deactivating ends the user's sessions at once; tokens are kept but refused
-- while the user is deactivated.
CREATE FUNCTION admin_set_user_active(target uuid, active boolean) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    PERFORM admin_require();
    IF NOT active THEN
        PERFORM admin_keep_one(target);
        DELETE FROM sessions WHERE user_id = target;
    END IF;
    UPDATE users SET deactivated_at = CASE WHEN active THEN NULL ELSE coalesce(deactivated_at, now()) END,
                     updated_at = now()
    WHERE id = target;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM admin_audit(target, CASE WHEN active THEN 'user_reactivated' ELSE 'user_deactivated' END);
    RETURN true;
END $$;

REVOKE ALL ON FUNCTION authenticate_token(bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION session_authenticate(bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION breakglass_credential(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION admin_require() FROM PUBLIC;
REVOKE ALL ON FUNCTION admin_users() FROM PUBLIC;
REVOKE ALL ON FUNCTION admin_keep_one(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION admin_audit(uuid, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION admin_set_user_admin(uuid, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION admin_set_user_active(uuid, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION authenticate_token(bytea) TO mosaic_app;
GRANT EXECUTE ON FUNCTION session_authenticate(bytea) TO mosaic_app;
GRANT EXECUTE ON FUNCTION breakglass_credential(text) TO mosaic_app;
GRANT EXECUTE ON FUNCTION admin_users() TO mosaic_app;
GRANT EXECUTE ON FUNCTION admin_set_user_admin(uuid, boolean) TO mosaic_app;
GRANT EXECUTE ON FUNCTION admin_set_user_active(uuid, boolean) TO mosaic_app;
