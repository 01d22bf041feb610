-- The resources of a peer's grant, enforced by the row policies (issue 16).
--
-- A peer's request sets `mosaic.resources` (and `mosaic.write_resources`)
-- in its first statement, beside the granted workspaces; a local user's
-- request sets neither, so nothing below changes what local users see.
-- Each resource's tables get RESTRICTIVE policies, which PostgreSQL ANDs
-- with the permissive ones: a resource outside the scope is invisible to
-- every query, whichever path (list, node, nested field, search, count)
-- reads it. The functions are called in scalar subqueries so they are
-- evaluated once per statement.
--
-- A remote person a grant maps to a local user runs with `mosaic.user_id`
-- set too. The workspace functions then intersect the user's memberships
-- with the grant instead of adding them: a scope only narrows.

CREATE FUNCTION peer_scoped() RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce(current_setting('mosaic.resources', true), '') <> ''
$$;

CREATE FUNCTION resource_readable(r text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT NOT peer_scoped() OR r = ANY (current_setting('mosaic.resources', true)::text[])
$$;

CREATE FUNCTION resource_writable(r text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT NOT peer_scoped()
        OR r = ANY (coalesce(nullif(current_setting('mosaic.write_resources', true), ''), '{}')::text[])
$$;

REVOKE ALL ON FUNCTION peer_scoped(), resource_readable(text), resource_writable(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION peer_scoped(), resource_readable(text), resource_writable(text) TO mosaic_app;

-- Memberships and grant: added for a local user or a peer's guest (who has
-- no memberships), intersected for a mapped person.
CREATE OR REPLACE FUNCTION readable_workspace_ids() RETURNS uuid[]
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT CASE WHEN peer_scoped()
        THEN coalesce(array_agg(workspace_id) FILTER (WHERE workspace_id = ANY (granted_workspace_ids())), '{}')
             || CASE WHEN current_user_id() IS NULL THEN granted_workspace_ids() ELSE '{}' END
        ELSE coalesce(array_agg(workspace_id), '{}') || granted_workspace_ids() END
    FROM workspace_members WHERE user_id = current_user_id()
$$;

CREATE OR REPLACE FUNCTION writable_workspace_ids() RETURNS uuid[]
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT CASE WHEN peer_scoped()
        THEN coalesce(array_agg(workspace_id) FILTER (WHERE workspace_id = ANY (granted_write_workspace_ids())), '{}')
             || CASE WHEN current_user_id() IS NULL THEN granted_write_workspace_ids() ELSE '{}' END
        ELSE coalesce(array_agg(workspace_id), '{}') || granted_write_workspace_ids() END
    FROM workspace_members
    WHERE user_id = current_user_id() AND role IN ('OWNER', 'ADMIN', 'MEMBER')
$$;

-- A mapped person administers only workspaces the grant lets the peer change.
CREATE OR REPLACE FUNCTION admin_workspace_ids() RETURNS uuid[]
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT coalesce(array_agg(workspace_id), '{}')
    FROM workspace_members WHERE user_id = current_user_id() AND role IN ('OWNER', 'ADMIN')
        AND (NOT peer_scoped() OR workspace_id = ANY (granted_write_workspace_ids()))
$$;

-- Instance administration never travels through a peer.
CREATE OR REPLACE FUNCTION current_user_is_admin() RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT NOT peer_scoped() AND coalesce((SELECT is_admin FROM users WHERE id = current_user_id()), false)
$$;

-- The resource policies: read needs the resource, every write needs it writable.
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT * FROM (VALUES
        ('tasks', 'tasks'), ('projects', 'projects'), ('events', 'events'),
        ('teams', 'teams'), ('team_members', 'teams'),
        ('workspace_members', 'members'), ('workspace_invitations', 'members'),
        ('activity_log', 'activity'),
        ('knowledge_entries', 'knowledge'), ('knowledge_versions', 'knowledge'),
        ('knowledge_tags', 'knowledge'), ('knowledge_entry_tags', 'knowledge'),
        ('knowledge_links', 'knowledge'), ('knowledge_embeddings', 'knowledge'),
        ('agent_tasks', 'agent_tasks'), ('agent_task_events', 'agent_tasks')
    ) AS v(tbl, resource)
    LOOP
        EXECUTE format('CREATE POLICY %I ON %I AS RESTRICTIVE FOR SELECT USING ((SELECT resource_readable(%L)))',
                       t.tbl || '_scope_read', t.tbl, t.resource);
        EXECUTE format('CREATE POLICY %I ON %I AS RESTRICTIVE FOR INSERT WITH CHECK ((SELECT resource_writable(%L)))',
                       t.tbl || '_scope_insert', t.tbl, t.resource);
        EXECUTE format('CREATE POLICY %I ON %I AS RESTRICTIVE FOR UPDATE USING ((SELECT resource_writable(%L))) '
                       'WITH CHECK ((SELECT resource_writable(%L)))',
                       t.tbl || '_scope_update', t.tbl, t.resource, t.resource);
        EXECUTE format('CREATE POLICY %I ON %I AS RESTRICTIVE FOR DELETE USING ((SELECT resource_writable(%L)))',
                       t.tbl || '_scope_delete', t.tbl, t.resource);
    END LOOP;
    -- What is a local user's own (agents, their secrets, budgets, workspaces
    -- they create or delete) is never reached through a peer.
    FOR t IN SELECT * FROM (VALUES ('agents'), ('agent_secrets'), ('task_agents'),
                                   ('task_agent_workspaces'), ('agent_budgets')) AS v(tbl)
    LOOP
        EXECUTE format('CREATE POLICY %I ON %I AS RESTRICTIVE FOR ALL USING (NOT (SELECT peer_scoped())) '
                       'WITH CHECK (NOT (SELECT peer_scoped()))', t.tbl || '_not_through_peers', t.tbl);
    END LOOP;
END $$;

CREATE POLICY workspaces_not_created_through_peers ON workspaces AS RESTRICTIVE FOR INSERT
    WITH CHECK (NOT (SELECT peer_scoped()));
CREATE POLICY workspaces_not_deleted_through_peers ON workspaces AS RESTRICTIVE FOR DELETE
    USING (NOT (SELECT peer_scoped()));
