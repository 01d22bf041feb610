-- API tokens can be listed and revoked (issue 12): each has a name, and the
-- check is a plain read again, like sessions' (0013); the server records use
-- with token_touch only when the last record is over a minute old.
ALTER TABLE api_tokens
    ADD COLUMN name text NOT NULL DEFAULT '' CHECK (length(name) <= 100);

DROP FUNCTION authenticate_token(bytea);
CREATE FUNCTION authenticate_token(hash bytea)
RETURNS TABLE (user_id uuid, email text, name text, is_admin boolean, email_verified boolean,
               expired boolean, deactivated boolean, token_id uuid, stale_use boolean)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT u.id, u.email, u.name, u.is_admin, u.email_verified,
           (t.expires_at IS NOT NULL AND t.expires_at <= now()), u.deactivated_at IS NOT NULL,
           t.id, t.last_used_at IS NULL OR t.last_used_at < now() - interval '1 minute'
    FROM api_tokens t JOIN users u ON u.id = t.user_id
    WHERE t.token_hash = hash
$$;

-- Records that a token was used (at most once a minute).
CREATE FUNCTION token_touch(tid uuid) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    UPDATE api_tokens SET last_used_at = now()
    WHERE id = tid AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')
$$;

-- Tokens the caller may see: their own, or (all_users, instance administrators
-- only) everyone's. Never the hash.
CREATE FUNCTION tokens_list(all_users boolean)
RETURNS TABLE (id uuid, name text, user_id uuid, email text, created_at timestamptz,
               expires_at timestamptz, last_used_at timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    IF all_users THEN
        PERFORM admin_require();
    END IF;
    RETURN QUERY
    SELECT t.id, t.name, u.id, u.email, t.created_at, t.expires_at, t.last_used_at
    FROM api_tokens t JOIN users u ON u.id = t.user_id
    WHERE all_users OR t.user_id = current_user_id()
    ORDER BY t.created_at DESC, t.id;
END $$;

-- Revokes (deletes) a token of the caller's, or anyone's for an instance
-- administrator. Audited; false when there is no such token the caller may revoke.
CREATE FUNCTION token_revoke(tid uuid) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    owner uuid;
    actor_admin boolean;
BEGIN
    SELECT is_admin AND deactivated_at IS NULL INTO actor_admin FROM users WHERE id = current_user_id();
    DELETE FROM api_tokens t
    WHERE t.id = tid AND (t.user_id = current_user_id() OR coalesce(actor_admin, false))
    RETURNING t.user_id INTO owner;
    IF owner IS NULL THEN
        RETURN false;
    END IF;
    INSERT INTO auth_audit (user_id, email, action, details)
    SELECT u.id, u.email, 'token_revoked', jsonb_build_object('token', tid, 'by', current_user_id())
    FROM users u WHERE u.id = owner;
    RETURN true;
END $$;

REVOKE ALL ON FUNCTION authenticate_token(bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION token_touch(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION tokens_list(boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION token_revoke(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION authenticate_token(bytea) TO mosaic_app;
GRANT EXECUTE ON FUNCTION token_touch(uuid) TO mosaic_app;
GRANT EXECUTE ON FUNCTION tokens_list(boolean) TO mosaic_app;
GRANT EXECUTE ON FUNCTION token_revoke(uuid) TO mosaic_app;
