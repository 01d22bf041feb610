-- Caches of rows (issue 13): each instance keeps the bearer tokens it has
-- checked, the peer registry and its current key id in memory, and forgets
-- what a change concerns when it is announced on the trigger's channel.
-- Notifications are sent at commit (so every replica's listener hears them,
-- and a rolled-back change says nothing). A token's change names the token,
-- a user's the user (the cache forgets that user's tokens); the registry and
-- the keys are forgotten whole (an empty payload), since they change rarely.
CREATE FUNCTION notify_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    PERFORM pg_notify(TG_ARGV[0], '');
    RETURN NULL;
END $$;

CREATE FUNCTION notify_auth_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    PERFORM pg_notify('mosaic_auth_changes', TG_ARGV[0] || ':' || OLD.id);
    RETURN NULL;
END $$;

CREATE TRIGGER api_tokens_notify AFTER UPDATE OR DELETE ON api_tokens
    FOR EACH ROW EXECUTE FUNCTION notify_auth_change('token');
CREATE TRIGGER users_notify
    AFTER UPDATE OF email, name, is_admin, email_verified, deactivated_at OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION notify_auth_change('user');
CREATE TRIGGER peers_notify
    AFTER INSERT OR UPDATE OR DELETE ON peers
    FOR EACH STATEMENT EXECUTE FUNCTION notify_change('mosaic_peer_changes');
CREATE TRIGGER instance_keys_notify
    AFTER INSERT OR UPDATE OR DELETE ON instance_keys
    FOR EACH STATEMENT EXECUTE FUNCTION notify_change('mosaic_key_changes');

-- The cache needs the token's expiry to refuse an expired token by itself.
DROP FUNCTION authenticate_token(bytea);
CREATE FUNCTION authenticate_token(hash bytea)
RETURNS TABLE (user_id uuid, email text, name text, is_admin boolean, email_verified boolean,
               expires_at timestamptz, expired boolean, deactivated boolean, token_id uuid,
               stale_use boolean)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT u.id, u.email, u.name, u.is_admin, u.email_verified, t.expires_at,
           (t.expires_at IS NOT NULL AND t.expires_at <= now()), u.deactivated_at IS NOT NULL,
           t.id, t.last_used_at IS NULL OR t.last_used_at < now() - interval '1 minute'
    FROM api_tokens t JOIN users u ON u.id = t.user_id
    WHERE t.token_hash = hash
$$;
REVOKE ALL ON FUNCTION authenticate_token(bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION authenticate_token(bytea) TO mosaic_app;
