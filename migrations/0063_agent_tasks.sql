-- Agent orchestration (issue 15): agent tasks in a durable queue, the
-- append-only log of their status changes, and the agents that work them
-- with per-agent tokens.
--
-- Two scopes reach these rows. A request of a user (mosaic.user_id) sees
-- the tasks of the workspaces it may read and creates them where it may
-- write. A worker request of an agent (mosaic.agent_id, set by
-- src/http/worker.rs after its token was checked) sees the tasks of the
-- workspaces that agent serves and changes only the queued ones it claims
-- and the ones it holds. The reaper acts for no one, through one definer.

CREATE TABLE task_agents (
    id           uuid PRIMARY KEY,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    token_hash   bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    created_by   uuid REFERENCES users ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_seen_at timestamptz,
    revoked_at   timestamptz
);

-- The workspaces an agent takes work from (at least the one its token was made in).
CREATE TABLE task_agent_workspaces (
    agent_id     uuid NOT NULL REFERENCES task_agents ON DELETE CASCADE,
    workspace_id uuid NOT NULL REFERENCES workspaces ON DELETE CASCADE,
    PRIMARY KEY (agent_id, workspace_id)
);
CREATE INDEX task_agent_workspaces_ws ON task_agent_workspaces (workspace_id);

-- priority: 1 (lowest) to 10 (highest). `attempts` counts claims; the
-- checkpoint is the agent's, with the step it was taken after.
CREATE TABLE agent_tasks (
    id              uuid PRIMARY KEY,
    workspace_id    uuid NOT NULL REFERENCES workspaces ON DELETE CASCADE,
    title           text NOT NULL CHECK (length(btrim(title)) BETWEEN 1 AND 500),
    instructions    jsonb NOT NULL DEFAULT '{}',
    kind            text NOT NULL CHECK (kind IN ('WORKER', 'REVIEWER', 'TESTER', 'SCRIPT')),
    priority        smallint NOT NULL DEFAULT 5 CHECK (priority BETWEEN 1 AND 10),
    status          text NOT NULL DEFAULT 'QUEUED' CHECK (status IN
                    ('QUEUED', 'ASSIGNED', 'RUNNING', 'COMPLETED', 'FAILED', 'KILLED', 'CANCELLED', 'DEAD')),
    -- Why the status last changed; copied into the event log.
    status_reason   text CHECK (length(status_reason) <= 2000),
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts    integer NOT NULL DEFAULT 3 CHECK (max_attempts BETWEEN 1 AND 100),
    checkpoint      jsonb,
    checkpoint_step integer,
    result          jsonb,
    error           text CHECK (length(error) <= 2000),
    usage_tokens    bigint NOT NULL DEFAULT 0,
    usage_cost      bigint NOT NULL DEFAULT 0,
    usage_agent_ms  bigint NOT NULL DEFAULT 0,
    agent_id        uuid REFERENCES task_agents ON DELETE SET NULL,
    created_by      uuid REFERENCES users ON DELETE SET NULL,
    -- Not claimable before this (a delayed retry).
    run_after       timestamptz NOT NULL DEFAULT clock_timestamp(),
    heartbeat_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at     timestamptz,
    CHECK ((status IN ('ASSIGNED', 'RUNNING')) = (agent_id IS NOT NULL AND heartbeat_at IS NOT NULL)
           OR status IN ('COMPLETED', 'FAILED', 'KILLED', 'CANCELLED', 'DEAD'))
);
-- Lists, in their order (created_at, id).
CREATE INDEX agent_tasks_ws ON agent_tasks (workspace_id, created_at, id);
CREATE INDEX agent_tasks_created ON agent_tasks (created_at, id);
-- A workspace's next task for a claim, in the claim's order.
CREATE INDEX agent_tasks_queued ON agent_tasks (workspace_id, priority DESC, created_at, id)
    WHERE status = 'QUEUED';
-- What holds a slot under the instance's cap (per workspace, for the
-- claim's fairness), and what the reaper checks.
CREATE INDEX agent_tasks_held ON agent_tasks (workspace_id, heartbeat_at) WHERE status IN ('ASSIGNED', 'RUNNING');

-- The audit trail: one row per status change, written only by the trigger
-- below; the request role may read it, never change it.
CREATE TABLE agent_task_events (
    id           bigserial PRIMARY KEY,
    task_id      uuid NOT NULL REFERENCES agent_tasks ON DELETE CASCADE,
    workspace_id uuid NOT NULL,
    from_status  text,
    to_status    text NOT NULL,
    actor_kind   text NOT NULL CHECK (actor_kind IN ('USER', 'AGENT', 'SYSTEM')),
    actor_id     uuid,
    reason       text,
    at           timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX agent_task_events_task ON agent_task_events (task_id, id);

-- ---------------------------------------------------------------------------
-- The agent scope.
-- ---------------------------------------------------------------------------

CREATE FUNCTION current_agent_id() RETURNS uuid
LANGUAGE sql STABLE AS $$
    SELECT nullif(current_setting('mosaic.agent_id', true), '')::uuid
$$;

CREATE FUNCTION agent_workspace_ids() RETURNS uuid[]
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT coalesce(array_agg(aw.workspace_id), '{}')
    FROM task_agent_workspaces aw JOIN task_agents a ON a.id = aw.agent_id
    WHERE aw.agent_id = current_agent_id() AND a.revoked_at IS NULL
$$;

-- Token lookup before any scope exists; touches last_seen_at at most once a minute.
CREATE FUNCTION authenticate_task_agent(hash bytea) RETURNS uuid
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    WITH touched AS (
        UPDATE task_agents SET last_seen_at = clock_timestamp()
        WHERE token_hash = hash AND revoked_at IS NULL
          AND (last_seen_at IS NULL OR last_seen_at < clock_timestamp() - interval '1 minute')
    )
    SELECT id FROM task_agents WHERE token_hash = hash AND revoked_at IS NULL
$$;

-- Tasks held (ASSIGNED or RUNNING) on the whole instance, for its cap:
-- answered to an agent's worker request only.
CREATE FUNCTION agent_tasks_held() RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT count(*) FROM agent_tasks
    WHERE status IN ('ASSIGNED', 'RUNNING') AND current_agent_id() IS NOT NULL
$$;

-- ---------------------------------------------------------------------------
-- Every status change is logged, and announced when it frees a slot or
-- queues work (idle agents wait on `mosaic_agent_task_queue`).
-- ---------------------------------------------------------------------------

CREATE FUNCTION agent_task_status_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    was text := CASE WHEN TG_OP = 'INSERT' THEN NULL ELSE OLD.status END;
BEGIN
    IF was IS NOT DISTINCT FROM NEW.status THEN
        RETURN NULL;
    END IF;
    INSERT INTO agent_task_events (task_id, workspace_id, from_status, to_status, actor_kind, actor_id, reason)
    VALUES (NEW.id, NEW.workspace_id, was, NEW.status,
            CASE WHEN current_user_id() IS NOT NULL THEN 'USER'
                 WHEN current_agent_id() IS NOT NULL THEN 'AGENT' ELSE 'SYSTEM' END,
            coalesce(current_user_id(), current_agent_id()),
            NEW.status_reason);
    IF NEW.status = 'QUEUED' OR was IN ('ASSIGNED', 'RUNNING') THEN
        PERFORM pg_notify('mosaic_agent_task_queue', NEW.workspace_id::text);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER agent_tasks_status AFTER INSERT OR UPDATE OF status ON agent_tasks
    FOR EACH ROW EXECUTE FUNCTION agent_task_status_changed();

CREATE TRIGGER agent_tasks_touch BEFORE UPDATE ON agent_tasks
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

-- The reaper (src/agent_tasks/reaper.rs) acts for no one: a task whose
-- holder has not sent a heartbeat within `stale_after` goes back to the
-- queue (to resume from its checkpoint), or is DEAD after its last attempt.
-- Answers only a connection without a scope.
CREATE FUNCTION agent_tasks_reap(stale_after interval) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE n integer;
BEGIN
    IF current_user_id() IS NOT NULL OR current_agent_id() IS NOT NULL OR granted_workspace_ids() <> '{}' THEN
        RETURN 0;
    END IF;
    WITH lost AS (
        SELECT id FROM agent_tasks
        WHERE status IN ('ASSIGNED', 'RUNNING') AND heartbeat_at < clock_timestamp() - stale_after
        FOR UPDATE SKIP LOCKED
    )
    UPDATE agent_tasks t
    SET status = CASE WHEN t.attempts >= t.max_attempts THEN 'DEAD' ELSE 'QUEUED' END,
        status_reason = format('no heartbeat from agent %s for %s', t.agent_id, stale_after),
        agent_id = NULL, heartbeat_at = NULL, run_after = clock_timestamp(),
        finished_at = CASE WHEN t.attempts >= t.max_attempts THEN clock_timestamp() END
    FROM lost WHERE t.id = lost.id;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

-- ---------------------------------------------------------------------------
-- Row-Level Security.
-- ---------------------------------------------------------------------------

ALTER TABLE task_agents ENABLE ROW LEVEL SECURITY;
ALTER TABLE task_agents FORCE ROW LEVEL SECURITY;
ALTER TABLE task_agent_workspaces ENABLE ROW LEVEL SECURITY;
ALTER TABLE task_agent_workspaces FORCE ROW LEVEL SECURITY;
ALTER TABLE agent_tasks ENABLE ROW LEVEL SECURITY;
ALTER TABLE agent_tasks FORCE ROW LEVEL SECURITY;
ALTER TABLE agent_task_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE agent_task_events FORCE ROW LEVEL SECURITY;

-- An agent is its creator's; an agent sees itself.
CREATE POLICY task_agents_read ON task_agents FOR SELECT USING (
    created_by = (SELECT current_user_id()) OR id = (SELECT current_agent_id())
);
CREATE POLICY task_agents_insert ON task_agents FOR INSERT WITH CHECK (
    created_by = (SELECT current_user_id())
);

-- Only owners and admins of a workspace let an agent of theirs work there.
CREATE POLICY task_agent_workspaces_read ON task_agent_workspaces FOR SELECT USING (
    EXISTS (SELECT 1 FROM task_agents a WHERE a.id = agent_id)
);
CREATE POLICY task_agent_workspaces_insert ON task_agent_workspaces FOR INSERT WITH CHECK (
    workspace_id = ANY ((SELECT admin_workspace_ids())::uuid[])
    AND EXISTS (SELECT 1 FROM task_agents a WHERE a.id = agent_id AND a.created_by = (SELECT current_user_id()))
);

CREATE POLICY agent_tasks_read ON agent_tasks FOR SELECT USING (
    workspace_id = ANY ((SELECT readable_workspace_ids())::uuid[])
    OR workspace_id = ANY ((SELECT agent_workspace_ids())::uuid[])
);
CREATE POLICY agent_tasks_insert ON agent_tasks FOR INSERT WITH CHECK (
    workspace_id = ANY ((SELECT writable_workspace_ids())::uuid[])
);
-- Members who may write change tasks (cancel, retry); an agent claims a
-- queued task of its workspaces and then changes only what it holds.
CREATE POLICY agent_tasks_update_member ON agent_tasks FOR UPDATE
    USING (workspace_id = ANY ((SELECT writable_workspace_ids())::uuid[]))
    WITH CHECK (workspace_id = ANY ((SELECT writable_workspace_ids())::uuid[]));
CREATE POLICY agent_tasks_update_agent ON agent_tasks FOR UPDATE
    USING (workspace_id = ANY ((SELECT agent_workspace_ids())::uuid[])
           AND (status = 'QUEUED' OR agent_id = (SELECT current_agent_id())))
    WITH CHECK (workspace_id = ANY ((SELECT agent_workspace_ids())::uuid[])
           AND (agent_id = (SELECT current_agent_id()) OR status IN ('QUEUED', 'FAILED', 'DEAD')));

CREATE POLICY agent_task_events_read ON agent_task_events FOR SELECT USING (
    workspace_id = ANY ((SELECT readable_workspace_ids())::uuid[])
);

-- The token hash is never readable by the request role.
GRANT SELECT (id, name, created_by, created_at, last_seen_at, revoked_at), INSERT ON task_agents TO mosaic_app;
GRANT SELECT, INSERT ON task_agent_workspaces TO mosaic_app;
GRANT SELECT, INSERT, UPDATE ON agent_tasks TO mosaic_app;
GRANT SELECT ON agent_task_events TO mosaic_app;

REVOKE ALL ON FUNCTION agent_workspace_ids(), authenticate_task_agent(bytea), agent_tasks_held(),
    agent_tasks_reap(interval), agent_task_status_changed() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION agent_workspace_ids(), authenticate_task_agent(bytea), agent_tasks_held(),
    agent_tasks_reap(interval) TO mosaic_app;
