-- Core single-instance schema: users, API tokens, workspaces and their members,
-- teams, projects, tasks, events and the activity log.
--
-- Tenancy is enforced here, in PostgreSQL, by Row-Level Security. The server's
-- requests run as `mosaic_app`, a role that owns nothing and has no BYPASSRLS.
-- Each request transaction first sets its scope with set_config(..., true):
--   mosaic.user_id        the acting local user (empty for a peer principal)
--   mosaic.workspace_ids  workspaces a peer grant exposes read-only, '{a,b}'
--   mosaic.write_workspace_ids  the subset a read-write grant lets it change
-- With nothing set, nothing is visible.

DO $$ BEGIN
    CREATE ROLE mosaic_app NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOINHERIT;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

DO $$ BEGIN
    EXECUTE format('GRANT mosaic_app TO %I', current_user);
EXCEPTION WHEN others THEN NULL; -- superusers need no membership
END $$;

GRANT USAGE ON SCHEMA public TO mosaic_app;

CREATE TABLE instance_identity (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    id         uuid NOT NULL,
    name       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id         uuid PRIMARY KEY,
    email      text NOT NULL UNIQUE CHECK (email = lower(email) AND email ~ '^[^@\s]+@[^@\s]+$'),
    name       text CHECK (length(name) <= 200),
    is_admin   boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_tokens (
    id           uuid PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES users ON DELETE CASCADE,
    token_hash   bytea NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    last_used_at timestamptz
);

CREATE TABLE workspaces (
    id         uuid PRIMARY KEY,
    name       text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 200),
    created_by uuid REFERENCES users ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE workspace_members (
    workspace_id uuid NOT NULL REFERENCES workspaces ON DELETE CASCADE,
    user_id      uuid NOT NULL REFERENCES users ON DELETE CASCADE,
    role         text NOT NULL CHECK (role IN ('OWNER', 'ADMIN', 'MEMBER', 'GUEST')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, user_id)
);
CREATE INDEX workspace_members_user ON workspace_members (user_id);

CREATE TABLE teams (
    id           uuid PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES workspaces ON DELETE CASCADE,
    name         text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 200),
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workspace_id, id)
);

CREATE TABLE team_members (
    workspace_id uuid NOT NULL,
    team_id      uuid NOT NULL,
    user_id      uuid NOT NULL REFERENCES users ON DELETE CASCADE,
    role         text NOT NULL CHECK (role IN ('OWNER', 'ADMIN', 'MEMBER')),
    PRIMARY KEY (team_id, user_id),
    FOREIGN KEY (workspace_id, team_id) REFERENCES teams (workspace_id, id) ON DELETE CASCADE
);

CREATE TABLE projects (
    id           uuid PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES workspaces ON DELETE CASCADE,
    name         text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 200),
    description  text CHECK (length(description) <= 10000),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workspace_id, id)
);

-- priority: 0 LOW, 1 MEDIUM, 2 HIGH, 3 URGENT (a number so it orders naturally)
CREATE TABLE tasks (
    id           uuid PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES workspaces ON DELETE CASCADE,
    project_id   uuid,
    title        text NOT NULL CHECK (length(btrim(title)) BETWEEN 1 AND 500),
    description  text CHECK (length(description) <= 100000),
    status       text NOT NULL DEFAULT 'TODO'
                 CHECK (status IN ('TODO', 'IN_PROGRESS', 'BLOCKED', 'DONE', 'CANCELLED')),
    priority     smallint NOT NULL DEFAULT 1 CHECK (priority BETWEEN 0 AND 3),
    assignee_id  uuid REFERENCES users ON DELETE SET NULL,
    due_date     date,
    created_by   uuid REFERENCES users ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    FOREIGN KEY (workspace_id, project_id) REFERENCES projects (workspace_id, id) ON DELETE CASCADE
);
CREATE INDEX tasks_ws_created ON tasks (workspace_id, created_at, id);
CREATE INDEX tasks_created ON tasks (created_at, id);
CREATE INDEX tasks_updated ON tasks (updated_at, id);
CREATE INDEX tasks_priority ON tasks (priority, id);
CREATE INDEX tasks_project ON tasks (project_id);
CREATE INDEX tasks_assignee ON tasks (assignee_id);

CREATE TABLE events (
    id           uuid PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES workspaces ON DELETE CASCADE,
    title        text NOT NULL CHECK (length(btrim(title)) BETWEEN 1 AND 500),
    description  text,
    starts_at    timestamptz NOT NULL,
    ends_at      timestamptz NOT NULL,
    location     text,
    created_by   uuid REFERENCES users ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at >= starts_at)
);
CREATE INDEX events_ws_start ON events (workspace_id, starts_at);

-- No foreign key to workspaces: the record of a deletion outlives what it deleted.
CREATE TABLE activity_log (
    id           bigserial PRIMARY KEY,
    workspace_id uuid NOT NULL,
    actor_id     uuid,
    action       text NOT NULL,
    entity_type  text NOT NULL,
    entity_id    uuid NOT NULL,
    changes      jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX activity_log_ws ON activity_log (workspace_id, id);

-- ---------------------------------------------------------------------------
-- Scope helpers. SECURITY DEFINER so policies can consult membership without
-- recursing into the membership table's own policies; they run as the
-- migration's owner, which bypasses RLS.
-- ---------------------------------------------------------------------------

CREATE FUNCTION current_user_id() RETURNS uuid
LANGUAGE sql STABLE AS $$
    SELECT nullif(current_setting('mosaic.user_id', true), '')::uuid
$$;

CREATE FUNCTION granted_workspace_ids() RETURNS uuid[]
LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('mosaic.workspace_ids', true), '')::uuid[], '{}')
$$;

CREATE FUNCTION granted_write_workspace_ids() RETURNS uuid[]
LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('mosaic.write_workspace_ids', true), '')::uuid[], '{}')
$$;

CREATE FUNCTION workspace_role(ws uuid, uid uuid) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT role FROM workspace_members WHERE workspace_id = ws AND user_id = uid
$$;

CREATE FUNCTION is_workspace_member(ws uuid, uid uuid) RETURNS boolean
LANGUAGE sql STABLE AS $$ SELECT workspace_role(ws, uid) IS NOT NULL $$;

CREATE FUNCTION is_workspace_admin(ws uuid, uid uuid) RETURNS boolean
LANGUAGE sql STABLE AS $$ SELECT coalesce(workspace_role(ws, uid) IN ('OWNER', 'ADMIN'), false) $$;

CREATE FUNCTION is_workspace_owner(ws uuid, uid uuid) RETURNS boolean
LANGUAGE sql STABLE AS $$ SELECT coalesce(workspace_role(ws, uid) = 'OWNER', false) $$;

-- Workspaces the current scope may read: the user's memberships plus a peer grant.
CREATE FUNCTION readable_workspace_ids() RETURNS uuid[]
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT coalesce(array_agg(workspace_id), '{}') || granted_workspace_ids()
    FROM workspace_members WHERE user_id = current_user_id()
$$;

-- Workspaces whose content (projects, tasks, events) the scope may change:
-- members above GUEST, plus a read-write peer grant.
CREATE FUNCTION writable_workspace_ids() RETURNS uuid[]
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT coalesce(array_agg(workspace_id), '{}') || granted_write_workspace_ids()
    FROM workspace_members
    WHERE user_id = current_user_id() AND role IN ('OWNER', 'ADMIN', 'MEMBER')
$$;

CREATE FUNCTION admin_workspace_ids() RETURNS uuid[]
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT coalesce(array_agg(workspace_id), '{}')
    FROM workspace_members WHERE user_id = current_user_id() AND role IN ('OWNER', 'ADMIN')
$$;

-- Token lookup happens before any scope exists, so it is a narrow definer
-- function: the application role cannot read api_tokens itself.
CREATE FUNCTION authenticate_token(hash bytea)
RETURNS TABLE (user_id uuid, email text, name text, is_admin boolean, expired boolean)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    WITH touched AS (  -- at most one write a minute per token, not one per request
        UPDATE api_tokens SET last_used_at = now()
        WHERE token_hash = hash AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')
    )
    SELECT u.id, u.email, u.name, u.is_admin, (t.expires_at IS NOT NULL AND t.expires_at <= now())
    FROM api_tokens t JOIN users u ON u.id = t.user_id
    WHERE t.token_hash = hash
$$;

-- Finding a user to add as a member: exact e-mail match, nothing else revealed.
CREATE FUNCTION user_id_by_email(addr text) RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT id FROM users WHERE email = lower(addr) AND current_user_id() IS NOT NULL
$$;

REVOKE ALL ON FUNCTION authenticate_token(bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION authenticate_token(bytea) TO mosaic_app;

-- ---------------------------------------------------------------------------
-- Rules the policies cannot express row by row.
-- ---------------------------------------------------------------------------

-- The creator of a workspace becomes its owner.
CREATE FUNCTION add_creator_as_owner() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    INSERT INTO workspace_members (workspace_id, user_id, role) VALUES (NEW.id, NEW.created_by, 'OWNER');
    RETURN NULL;
END $$;
CREATE TRIGGER workspaces_owner AFTER INSERT ON workspaces
    FOR EACH ROW EXECUTE FUNCTION add_creator_as_owner();

-- A workspace keeps at least one owner (unless the workspace itself is going).
CREATE FUNCTION keep_an_owner() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    IF OLD.role = 'OWNER'
       AND EXISTS (SELECT 1 FROM workspaces WHERE id = OLD.workspace_id)
       AND NOT EXISTS (SELECT 1 FROM workspace_members
                       WHERE workspace_id = OLD.workspace_id AND role = 'OWNER') THEN
        RAISE EXCEPTION 'a workspace must keep at least one owner' USING ERRCODE = 'MOS01';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER workspace_members_owner AFTER UPDATE OR DELETE ON workspace_members
    FOR EACH ROW EXECUTE FUNCTION keep_an_owner();

CREATE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := clock_timestamp();
    RETURN NEW;
END $$;
CREATE TRIGGER workspaces_touch BEFORE UPDATE ON workspaces FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
CREATE TRIGGER projects_touch BEFORE UPDATE ON projects FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
CREATE TRIGGER tasks_touch BEFORE UPDATE ON tasks FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

-- Who changed what: one row per insert, update or delete of tenant data, with
-- the changed columns' new values (or the deleted row).
CREATE FUNCTION log_activity() RETURNS trigger
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
    INSERT INTO activity_log (workspace_id, actor_id, action, entity_type, entity_id, changes)
    VALUES (ws, current_user_id(), lower(TG_OP), TG_TABLE_NAME, entity, changes);
    RETURN NULL;
END $$;
CREATE TRIGGER workspaces_activity AFTER INSERT OR UPDATE OR DELETE ON workspaces
    FOR EACH ROW EXECUTE FUNCTION log_activity();
CREATE TRIGGER workspace_members_activity AFTER INSERT OR UPDATE OR DELETE ON workspace_members
    FOR EACH ROW EXECUTE FUNCTION log_activity();
CREATE TRIGGER teams_activity AFTER INSERT OR UPDATE OR DELETE ON teams
    FOR EACH ROW EXECUTE FUNCTION log_activity();
CREATE TRIGGER projects_activity AFTER INSERT OR UPDATE OR DELETE ON projects
    FOR EACH ROW EXECUTE FUNCTION log_activity();
CREATE TRIGGER tasks_activity AFTER INSERT OR UPDATE OR DELETE ON tasks
    FOR EACH ROW EXECUTE FUNCTION log_activity();
CREATE TRIGGER events_activity AFTER INSERT OR UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION log_activity();

-- ---------------------------------------------------------------------------
-- Row-Level Security: enabled and forced on every tenant table.
-- ---------------------------------------------------------------------------

ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE users FORCE ROW LEVEL SECURITY;
ALTER TABLE api_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_tokens FORCE ROW LEVEL SECURITY;
ALTER TABLE workspaces ENABLE ROW LEVEL SECURITY;
ALTER TABLE workspaces FORCE ROW LEVEL SECURITY;
ALTER TABLE workspace_members ENABLE ROW LEVEL SECURITY;
ALTER TABLE workspace_members FORCE ROW LEVEL SECURITY;
ALTER TABLE teams ENABLE ROW LEVEL SECURITY;
ALTER TABLE teams FORCE ROW LEVEL SECURITY;
ALTER TABLE team_members ENABLE ROW LEVEL SECURITY;
ALTER TABLE team_members FORCE ROW LEVEL SECURITY;
ALTER TABLE projects ENABLE ROW LEVEL SECURITY;
ALTER TABLE projects FORCE ROW LEVEL SECURITY;
ALTER TABLE tasks ENABLE ROW LEVEL SECURITY;
ALTER TABLE tasks FORCE ROW LEVEL SECURITY;
ALTER TABLE events ENABLE ROW LEVEL SECURITY;
ALTER TABLE events FORCE ROW LEVEL SECURITY;
ALTER TABLE activity_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE activity_log FORCE ROW LEVEL SECURITY;

-- Users: yourself, and people who share a workspace with you.
CREATE POLICY users_read ON users FOR SELECT USING (
    id = current_user_id()
    OR EXISTS (SELECT 1 FROM workspace_members m
               WHERE m.user_id = users.id AND m.workspace_id = ANY (readable_workspace_ids()))
);
-- api_tokens: no policy at all, so the application role sees no row.

CREATE POLICY workspaces_read ON workspaces FOR SELECT USING (id = ANY (readable_workspace_ids()));
CREATE POLICY workspaces_create ON workspaces FOR INSERT
    WITH CHECK (current_user_id() IS NOT NULL AND created_by = current_user_id());
CREATE POLICY workspaces_update ON workspaces FOR UPDATE
    USING (id = ANY (admin_workspace_ids())) WITH CHECK (id = ANY (admin_workspace_ids()));
CREATE POLICY workspaces_delete ON workspaces FOR DELETE
    USING (is_workspace_owner(id, current_user_id()));

CREATE POLICY members_read ON workspace_members FOR SELECT
    USING (workspace_id = ANY (readable_workspace_ids()));
-- Admins manage members; only owners hand out or take away ownership.
CREATE POLICY members_add ON workspace_members FOR INSERT WITH CHECK (
    workspace_id = ANY (admin_workspace_ids())
    AND (role <> 'OWNER' OR is_workspace_owner(workspace_id, current_user_id()))
);
CREATE POLICY members_change ON workspace_members FOR UPDATE
    USING (workspace_id = ANY (admin_workspace_ids())
           AND (role <> 'OWNER' OR is_workspace_owner(workspace_id, current_user_id())))
    WITH CHECK (workspace_id = ANY (admin_workspace_ids())
           AND (role <> 'OWNER' OR is_workspace_owner(workspace_id, current_user_id())));
CREATE POLICY members_remove ON workspace_members FOR DELETE USING (
    user_id = current_user_id()
    OR (workspace_id = ANY (admin_workspace_ids())
        AND (role <> 'OWNER' OR is_workspace_owner(workspace_id, current_user_id())))
);

CREATE POLICY teams_read ON teams FOR SELECT USING (workspace_id = ANY (readable_workspace_ids()));
CREATE POLICY teams_write ON teams FOR ALL
    USING (workspace_id = ANY (admin_workspace_ids())) WITH CHECK (workspace_id = ANY (admin_workspace_ids()));
CREATE POLICY team_members_read ON team_members FOR SELECT USING (workspace_id = ANY (readable_workspace_ids()));
CREATE POLICY team_members_write ON team_members FOR ALL
    USING (workspace_id = ANY (admin_workspace_ids())) WITH CHECK (workspace_id = ANY (admin_workspace_ids()));

-- Content tables: readers read, writers (members above guest, read-write grants) write.
CREATE POLICY projects_read ON projects FOR SELECT USING (workspace_id = ANY (readable_workspace_ids()));
CREATE POLICY projects_insert ON projects FOR INSERT WITH CHECK (workspace_id = ANY (writable_workspace_ids()));
CREATE POLICY projects_update ON projects FOR UPDATE
    USING (workspace_id = ANY (writable_workspace_ids())) WITH CHECK (workspace_id = ANY (writable_workspace_ids()));
CREATE POLICY projects_delete ON projects FOR DELETE USING (workspace_id = ANY (admin_workspace_ids()));

CREATE POLICY tasks_read ON tasks FOR SELECT USING (workspace_id = ANY (readable_workspace_ids()));
CREATE POLICY tasks_insert ON tasks FOR INSERT WITH CHECK (
    workspace_id = ANY (writable_workspace_ids())
    AND (assignee_id IS NULL OR is_workspace_member(workspace_id, assignee_id))
);
CREATE POLICY tasks_update ON tasks FOR UPDATE
    USING (workspace_id = ANY (writable_workspace_ids()))
    WITH CHECK (workspace_id = ANY (writable_workspace_ids())
                AND (assignee_id IS NULL OR is_workspace_member(workspace_id, assignee_id)));
CREATE POLICY tasks_delete ON tasks FOR DELETE USING (workspace_id = ANY (writable_workspace_ids()));

CREATE POLICY events_read ON events FOR SELECT USING (workspace_id = ANY (readable_workspace_ids()));
CREATE POLICY events_write ON events FOR ALL
    USING (workspace_id = ANY (writable_workspace_ids())) WITH CHECK (workspace_id = ANY (writable_workspace_ids()));

CREATE POLICY activity_read ON activity_log FOR SELECT USING (workspace_id = ANY (readable_workspace_ids()));

-- The application role: data rights on tenant tables, nothing owned.
GRANT SELECT ON instance_identity TO mosaic_app;
GRANT SELECT ON users TO mosaic_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON workspaces, workspace_members, teams, team_members,
    projects, tasks, events TO mosaic_app;
GRANT SELECT ON activity_log TO mosaic_app;
