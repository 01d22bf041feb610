-- The first policies called the scope functions directly, so PostgreSQL
-- evaluated them for every row it filtered: a page of 50 tasks ran the
-- membership query of readable_workspace_ids() once per task scanned
-- (a SECURITY DEFINER function is never inlined). In a scalar subquery a
-- function becomes an InitPlan, evaluated once per statement; the
-- functions are STABLE, so the result is the same. Later migrations
-- (0060, 0063 to 0075) already write their policies this way; these are
-- the rest.
-- A function whose arguments are the row's (is_workspace_owner,
-- is_workspace_member) still runs per row; only its user argument moves.

ALTER POLICY users_read ON users USING (
    id = (SELECT current_user_id())
    OR EXISTS (SELECT 1 FROM workspace_members m
               WHERE m.user_id = users.id
                 AND m.workspace_id = ANY ((SELECT readable_workspace_ids())::uuid[])));

ALTER POLICY workspaces_read ON workspaces
    USING (id = ANY ((SELECT readable_workspace_ids())::uuid[]));
ALTER POLICY workspaces_create ON workspaces
    WITH CHECK ((SELECT current_user_id()) IS NOT NULL AND created_by = (SELECT current_user_id()));
ALTER POLICY workspaces_update ON workspaces
    USING (id = ANY ((SELECT admin_workspace_ids())::uuid[]))
    WITH CHECK (id = ANY ((SELECT admin_workspace_ids())::uuid[]));
ALTER POLICY workspaces_delete ON workspaces
    USING (is_workspace_owner(id, (SELECT current_user_id())));

ALTER POLICY members_read ON workspace_members
    USING (workspace_id = ANY ((SELECT readable_workspace_ids())::uuid[]));
ALTER POLICY members_add ON workspace_members WITH CHECK (
    workspace_id = ANY ((SELECT admin_workspace_ids())::uuid[])
    AND (role <> 'OWNER' OR is_workspace_owner(workspace_id, (SELECT current_user_id()))));
ALTER POLICY members_change ON workspace_members
    USING (workspace_id = ANY ((SELECT admin_workspace_ids())::uuid[])
           AND (role <> 'OWNER' OR is_workspace_owner(workspace_id, (SELECT current_user_id()))))
    WITH CHECK (workspace_id = ANY ((SELECT admin_workspace_ids())::uuid[])
                AND (role <> 'OWNER' OR is_workspace_owner(workspace_id, (SELECT current_user_id()))));
ALTER POLICY members_remove ON workspace_members USING (
    user_id = (SELECT current_user_id())
    OR (workspace_id = ANY ((SELECT admin_workspace_ids())::uuid[])
        AND (role <> 'OWNER' OR is_workspace_owner(workspace_id, (SELECT current_user_id())))));

ALTER POLICY teams_read ON teams
    USING (workspace_id = ANY ((SELECT readable_workspace_ids())::uuid[]));
ALTER POLICY teams_write ON teams
    USING (workspace_id = ANY ((SELECT admin_workspace_ids())::uuid[]))
    WITH CHECK (workspace_id = ANY ((SELECT admin_workspace_ids())::uuid[]));
ALTER POLICY team_members_read ON team_members
    USING (workspace_id = ANY ((SELECT readable_workspace_ids())::uuid[]));
ALTER POLICY team_members_write ON team_members
    USING (workspace_id = ANY ((SELECT admin_workspace_ids())::uuid[]))
    WITH CHECK (workspace_id = ANY ((SELECT admin_workspace_ids())::uuid[]));

ALTER POLICY projects_read ON projects
    USING (workspace_id = ANY ((SELECT readable_workspace_ids())::uuid[]));
ALTER POLICY projects_insert ON projects
    WITH CHECK (workspace_id = ANY ((SELECT writable_workspace_ids())::uuid[]));
ALTER POLICY projects_update ON projects
    USING (workspace_id = ANY ((SELECT writable_workspace_ids())::uuid[]))
    WITH CHECK (workspace_id = ANY ((SELECT writable_workspace_ids())::uuid[]));
ALTER POLICY projects_delete ON projects
    USING (workspace_id = ANY ((SELECT admin_workspace_ids())::uuid[]));

ALTER POLICY tasks_read ON tasks
    USING (workspace_id = ANY ((SELECT readable_workspace_ids())::uuid[]));
ALTER POLICY tasks_insert ON tasks WITH CHECK (
    workspace_id = ANY ((SELECT writable_workspace_ids())::uuid[])
    AND (assignee_id IS NULL OR is_workspace_member(workspace_id, assignee_id)));
ALTER POLICY tasks_update ON tasks
    USING (workspace_id = ANY ((SELECT writable_workspace_ids())::uuid[]))
    WITH CHECK (workspace_id = ANY ((SELECT writable_workspace_ids())::uuid[])
                AND (assignee_id IS NULL OR is_workspace_member(workspace_id, assignee_id)));
ALTER POLICY tasks_delete ON tasks
    USING (workspace_id = ANY ((SELECT writable_workspace_ids())::uuid[]));

ALTER POLICY events_read ON events
    USING (workspace_id = ANY ((SELECT readable_workspace_ids())::uuid[]));
ALTER POLICY events_write ON events
    USING (workspace_id = ANY ((SELECT writable_workspace_ids())::uuid[]))
    WITH CHECK (workspace_id = ANY ((SELECT writable_workspace_ids())::uuid[]));
ALTER POLICY activity_read ON activity_log
    USING (workspace_id = ANY ((SELECT readable_workspace_ids())::uuid[]));

ALTER POLICY agent_config_change ON agent_config
    USING ((SELECT current_user_is_admin()))
    WITH CHECK ((SELECT current_user_is_admin()));
ALTER POLICY agents_own ON agents
    USING (user_id = (SELECT current_user_id()))
    WITH CHECK (user_id = (SELECT current_user_id()));
ALTER POLICY agent_secrets_own ON agent_secrets
    USING (user_id = (SELECT current_user_id()))
    WITH CHECK (user_id = (SELECT current_user_id()));

ALTER POLICY invitations_read ON workspace_invitations
    USING (workspace_id = ANY ((SELECT admin_workspace_ids())::uuid[]));
ALTER POLICY invitations_invite ON workspace_invitations WITH CHECK (
    workspace_id = ANY ((SELECT admin_workspace_ids())::uuid[])
    AND invited_by = (SELECT current_user_id())
    AND status = 'PENDING'
    AND (role <> 'OWNER' OR is_workspace_owner(workspace_id, (SELECT current_user_id()))));
ALTER POLICY invitations_withdraw ON workspace_invitations
    USING (workspace_id = ANY ((SELECT admin_workspace_ids())::uuid[])
           AND status = 'PENDING'
           AND (role <> 'OWNER' OR is_workspace_owner(workspace_id, (SELECT current_user_id()))))
    WITH CHECK (workspace_id = ANY ((SELECT admin_workspace_ids())::uuid[])
                AND status IN ('REVOKED', 'EXPIRED'));

ALTER POLICY federation_audit_admins ON federation_audit
    USING ((SELECT current_user_is_admin()));
ALTER POLICY event_outbox_read ON event_outbox
    USING (id IS NOT NULL AND workspace_id = ANY ((SELECT readable_workspace_ids())::uuid[])
           AND resource_readable(resource));
ALTER POLICY received_events_local_users ON received_events
    USING ((SELECT current_user_id()) IS NOT NULL AND NOT (SELECT peer_scoped()));
