-- A person who leaves a workspace leaves its teams too: a team row would
-- otherwise name someone who can no longer see the workspace. Team
-- memberships are also logged, like every other tenant change.

-- Memberships already left behind by earlier versions.
DELETE FROM team_members tm
WHERE NOT EXISTS (SELECT 1 FROM workspace_members wm
                  WHERE wm.workspace_id = tm.workspace_id AND wm.user_id = tm.user_id);

CREATE FUNCTION leave_workspace_teams() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    DELETE FROM team_members WHERE workspace_id = OLD.workspace_id AND user_id = OLD.user_id;
    RETURN NULL;
END $$;
CREATE TRIGGER workspace_members_leave_teams AFTER DELETE ON workspace_members
    FOR EACH ROW EXECUTE FUNCTION leave_workspace_teams();

CREATE TRIGGER team_members_activity AFTER INSERT OR UPDATE OR DELETE ON team_members
    FOR EACH ROW EXECUTE FUNCTION log_activity();
