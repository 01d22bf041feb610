-- Grants become scope documents (issue 16): beside the workspaces, the
-- resources (kinds of data) a peer may read and those it may change, a cap
-- on rows per page, a rate limit, and remote people mapped to local users.
-- Absent resources mean all of them, so the grants made before keep
-- meaning what they meant. `federation/grant.rs` checks a document before
-- it is written; the checks here only keep out what no code should write.

ALTER TABLE peers
    ADD COLUMN grant_resources          text[],  -- NULL: every resource
    ADD COLUMN grant_excluded_resources text[] NOT NULL DEFAULT '{}',
    ADD COLUMN grant_write_resources    text[],  -- NULL: every readable one (when read-write)
    ADD COLUMN grant_max_rows           integer CHECK (grant_max_rows BETWEEN 1 AND 10000),
    ADD COLUMN grant_rate_limit         jsonb,   -- {"per_second": n, "burst": n}; NULL: the instance's
    ADD COLUMN grant_user_mappings      jsonb NOT NULL DEFAULT '[]',  -- [{"remote", "local_user"}]
    ADD COLUMN grant_unmapped           text NOT NULL DEFAULT 'guest' CHECK (grant_unmapped IN ('guest', 'refuse')),
    ADD CONSTRAINT peers_grant_resources_known CHECK (
        coalesce(grant_resources, '{}') || grant_excluded_resources || coalesce(grant_write_resources, '{}')
        <@ ARRAY['tasks', 'projects', 'events', 'teams', 'members', 'activity', 'knowledge', 'agent_tasks']
    );

-- A change made through a peer's COMMAND names the peer and the remote
-- person who asked (a global User ID), beside the local user a mapping
-- made them (actor_id), if any.
ALTER TABLE activity_log
    ADD COLUMN peer_id      uuid,
    ADD COLUMN remote_actor text;

CREATE OR REPLACE FUNCTION log_activity() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    old_row jsonb := CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END;
    new_row jsonb := CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END;
    row_now jsonb := coalesce(new_row, old_row);
    ws uuid := coalesce((row_now ->> 'workspace_id')::uuid, (row_now ->> 'id')::uuid);
    entity uuid := coalesce((row_now ->> 'id')::uuid, (row_now ->> 'user_id')::uuid);
    changes jsonb;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        SELECT coalesce(jsonb_object_agg(n.key, n.value), '{}') INTO changes
        FROM jsonb_each(new_row) n
        WHERE n.key <> 'updated_at' AND n.value IS DISTINCT FROM old_row -> n.key;
        IF changes = '{}' THEN RETURN NULL; END IF;
    ELSE
        changes := row_now;
    END IF;
    INSERT INTO activity_log (workspace_id, actor_id, action, entity_type, entity_id, changes, peer_id, remote_actor)
    VALUES (ws, current_user_id(), lower(TG_OP), TG_TABLE_NAME, entity, changes,
            nullif(current_setting('mosaic.peer_id', true), '')::uuid,
            nullif(current_setting('mosaic.remote_actor', true), ''));
    RETURN NULL;
END $$;

-- Instance admins map remote people to local users they share no workspace
-- with, so existence is checked by a narrow definer function (as
-- missing_workspaces is).
CREATE FUNCTION missing_users(ids uuid[]) RETURNS uuid[]
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT coalesce(array_agg(i), '{}') FROM unnest(ids) AS i
    WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.id = i)
$$;
REVOKE ALL ON FUNCTION missing_users(uuid[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION missing_users(uuid[]) TO mosaic_app;
