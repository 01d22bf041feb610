-- Instance administrators read the authentication audit: sign-ins through
-- the provider and break-glass (refused ones too), sign-outs, back-channel
-- logouts and user administration. Newest first, `before_id` to page on.
CREATE FUNCTION admin_auth_audit(before_id bigint, only_action text, only_email text, max_rows integer)
RETURNS TABLE (id bigint, at timestamptz, user_id uuid, email text, action text, details jsonb)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    PERFORM admin_require();
    RETURN QUERY
    SELECT a.id, a.at, a.user_id, a.email, a.action, a.details
    FROM auth_audit a
    WHERE (before_id IS NULL OR a.id < before_id)
      AND (only_action IS NULL OR a.action = only_action)
      AND (only_email IS NULL OR a.email = lower(only_email))
    ORDER BY a.id DESC
    LIMIT max_rows;
END $$;

REVOKE ALL ON FUNCTION admin_auth_audit(bigint, text, text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION admin_auth_audit(bigint, text, text, integer) TO mosaic_app;
