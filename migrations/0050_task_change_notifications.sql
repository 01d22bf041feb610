-- Live task changes (issue 11): every insert, update and delete of a task is
-- announced on the channel mosaic_task_changes, so that every replica's
-- listener sees it. The payload names the change and the ids only, never
-- content: each subscriber reads the task with its own scope (RLS) before
-- anything is sent. Notifications are delivered at commit, so a rolled-back
-- write announces nothing. Not a definer function: pg_notify needs no rights.
CREATE FUNCTION notify_task_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
DECLARE
    changed tasks := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
BEGIN
    PERFORM pg_notify('mosaic_task_changes', json_build_object(
        'kind', TG_OP, 'task', changed.id, 'workspace', changed.workspace_id)::text);
    RETURN NULL;
END $$;

CREATE TRIGGER tasks_notify AFTER INSERT OR UPDATE OR DELETE ON tasks
    FOR EACH ROW EXECUTE FUNCTION notify_task_change();
