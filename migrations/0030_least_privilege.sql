-- Least privilege for the request role (issue 10, item 15).
--
-- PostgreSQL lets PUBLIC execute every new function, so each SECURITY DEFINER
-- function (which runs as the migration owner and bypasses RLS) was callable
-- by `mosaic_app` with any argument: `workspace_ids_named` listed any tenant's
-- workspaces, `workspace_role` told any user's role in any workspace. From
-- here on no definer function is executable by PUBLIC; `mosaic_app` gets
-- exactly the ones requests call (the others granted it before keep their
-- grants), and those that take a workspace answer only within the caller's
-- scope. Trigger functions need no EXECUTE right to fire.

DO $$
DECLARE f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
             WHERE p.pronamespace = 'public'::regnamespace AND p.prosecdef
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END $$;

-- A role only within the caller's scope (the policies ask about the caller,
-- or about an assignee in a workspace the caller can already read).
CREATE OR REPLACE FUNCTION workspace_role(ws uuid, uid uuid) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT role FROM workspace_members
    WHERE workspace_id = ws AND user_id = uid AND ws = ANY (readable_workspace_ids())
$$;

-- Called by the row policies and by request code.
GRANT EXECUTE ON FUNCTION
    workspace_role(uuid, uuid),
    readable_workspace_ids(),
    writable_workspace_ids(),
    admin_workspace_ids(),
    current_user_is_admin(),
    user_id_by_email(text),
    missing_workspaces(uuid[])
TO mosaic_app;

-- The instance's keys: the request role reads the public halves only; the
-- sealed private key is read with the administrative connection.
REVOKE ALL ON instance_keys FROM mosaic_app;
GRANT SELECT (key_id, public_key, created_at, retired_at, valid_until) ON instance_keys TO mosaic_app;

-- The instance identity is read at startup with the administrative connection.
REVOKE ALL ON instance_identity FROM mosaic_app;
