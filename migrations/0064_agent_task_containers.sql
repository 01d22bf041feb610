-- Agent tasks worked by containers Mosaic starts (issue 15), agent tokens
-- listed and revoked, and a peer's COMMAND logged as the peer.
--
-- A container agent is a task agent like any other (its own token, the
-- same worker API), made by the dispatcher (src/agent_tasks/dispatch.rs)
-- for one workspace and one kind, with the name of its container. The
-- dispatcher acts for no one, through the definers below, which answer
-- only a connection without a scope.

ALTER TABLE task_agents
    -- The kinds of task the agent takes; NULL: every kind.
    ADD COLUMN kinds text[] CHECK (kinds <@ ARRAY['WORKER', 'REVIEWER', 'TESTER', 'SCRIPT']),
    -- Set for an agent running in a container Mosaic started.
    ADD COLUMN container_name text UNIQUE CHECK (length(container_name) BETWEEN 1 AND 200);

CREATE FUNCTION agent_task_kinds() RETURNS text[]
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT coalesce(
        (SELECT kinds FROM task_agents WHERE id = current_agent_id()),
        ARRAY['WORKER', 'REVIEWER', 'TESTER', 'SCRIPT'])
$$;

-- An agent sees (and so claims) only queued tasks of its kinds; what it
-- holds stays visible whatever its kind.
DROP POLICY agent_tasks_read ON agent_tasks;
CREATE POLICY agent_tasks_read ON agent_tasks FOR SELECT USING (
    workspace_id = ANY ((SELECT readable_workspace_ids())::uuid[])
    OR (workspace_id = ANY ((SELECT agent_workspace_ids())::uuid[])
        AND (kind = ANY ((SELECT agent_task_kinds())::text[]) OR agent_id = (SELECT current_agent_id())))
);
DROP POLICY agent_tasks_update_agent ON agent_tasks;
CREATE POLICY agent_tasks_update_agent ON agent_tasks FOR UPDATE
    USING (workspace_id = ANY ((SELECT agent_workspace_ids())::uuid[])
           AND ((status = 'QUEUED' AND kind = ANY ((SELECT agent_task_kinds())::text[]))
                OR agent_id = (SELECT current_agent_id())))
    WITH CHECK (workspace_id = ANY ((SELECT agent_workspace_ids())::uuid[])
           AND (agent_id = (SELECT current_agent_id()) OR status IN ('QUEUED', 'FAILED', 'DEAD')));

-- Whether this connection acts for no one (the dispatcher, the reaper).
CREATE FUNCTION agent_tasks_unscoped() RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT current_user_id() IS NULL AND current_agent_id() IS NULL AND granted_workspace_ids() = '{}'
$$;

-- A container agent for one workspace and one kind.
CREATE FUNCTION agent_task_container_agent(agent uuid, container text, hash bytea, ws uuid, kind text)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    IF NOT agent_tasks_unscoped() THEN
        RAISE EXCEPTION 'agent_task_container_agent acts for no one' USING ERRCODE = '42501';
    END IF;
    INSERT INTO task_agents (id, name, token_hash, kinds, container_name)
    VALUES (agent, left(format('container %s', kind), 100), hash, ARRAY[kind], container);
    INSERT INTO task_agent_workspaces (agent_id, workspace_id) VALUES (agent, ws);
END $$;

-- What the dispatcher weighs: per workspace and kind, the tasks ready to
-- claim now and those container agents hold.
CREATE FUNCTION agent_task_demand()
RETURNS TABLE (workspace_id uuid, kind text, ready bigint, held_by_containers bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT t.workspace_id, t.kind,
           count(*) FILTER (WHERE t.status = 'QUEUED' AND t.run_after <= clock_timestamp()),
           count(*) FILTER (WHERE t.status IN ('ASSIGNED', 'RUNNING') AND a.container_name IS NOT NULL)
    FROM agent_tasks t LEFT JOIN task_agents a ON a.id = t.agent_id
    WHERE agent_tasks_unscoped()
      AND (t.status = 'QUEUED' OR t.status IN ('ASSIGNED', 'RUNNING'))
    GROUP BY t.workspace_id, t.kind
$$;

-- The container agents not yet retired, with what each holds.
CREATE FUNCTION agent_task_container_agents()
RETURNS TABLE (id uuid, container_name text, workspace_id uuid, kind text, holding bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT a.id, a.container_name,
           (SELECT min(aw.workspace_id::text)::uuid FROM task_agent_workspaces aw WHERE aw.agent_id = a.id),
           a.kinds[1],
           (SELECT count(*) FROM agent_tasks t WHERE t.agent_id = a.id AND t.status IN ('ASSIGNED', 'RUNNING'))
    FROM task_agents a
    WHERE agent_tasks_unscoped() AND a.container_name IS NOT NULL AND a.revoked_at IS NULL
$$;

-- A container agent whose container is gone (exited, removed, lost): its
-- token is revoked and what it held goes back to the queue at once, to
-- resume from its checkpoint (DEAD after its last attempt). Returns the
-- tasks returned.
CREATE FUNCTION agent_task_container_retire(agent uuid, why text) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE n integer;
BEGIN
    IF NOT agent_tasks_unscoped() THEN
        RETURN 0;
    END IF;
    UPDATE task_agents SET revoked_at = coalesce(revoked_at, clock_timestamp())
    WHERE id = agent AND container_name IS NOT NULL;
    UPDATE agent_tasks t
    SET status = CASE WHEN t.attempts >= t.max_attempts THEN 'DEAD' ELSE 'QUEUED' END,
        status_reason = left(why, 2000),
        agent_id = NULL, heartbeat_at = NULL, run_after = clock_timestamp(),
        finished_at = CASE WHEN t.attempts >= t.max_attempts THEN clock_timestamp() END
    WHERE t.agent_id = agent AND t.status IN ('ASSIGNED', 'RUNNING');
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

-- The reaper, answering which agents lost their tasks (their containers
-- are stopped and removed). Same rule as agent_tasks_reap.
CREATE FUNCTION agent_tasks_reap_lost(stale_after interval) RETURNS TABLE (task_id uuid, agent_id uuid)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    IF NOT agent_tasks_unscoped() THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH lost AS (
        SELECT l.id, l.agent_id FROM agent_tasks l
        WHERE l.status IN ('ASSIGNED', 'RUNNING') AND l.heartbeat_at < clock_timestamp() - stale_after
        FOR UPDATE SKIP LOCKED
    ), returned AS (
        UPDATE agent_tasks t
        SET status = CASE WHEN t.attempts >= t.max_attempts THEN 'DEAD' ELSE 'QUEUED' END,
            status_reason = format('no heartbeat from agent %s for %s', t.agent_id, stale_after),
            agent_id = NULL, heartbeat_at = NULL, run_after = clock_timestamp(),
            finished_at = CASE WHEN t.attempts >= t.max_attempts THEN clock_timestamp() END
        FROM lost WHERE t.id = lost.id
        RETURNING t.id
    )
    SELECT r.id, lost.agent_id FROM returned r JOIN lost ON lost.id = r.id;
END $$;

-- ---------------------------------------------------------------------------
-- Agent tokens: the owners and admins of a workspace list the agents that
-- serve it and revoke them (never seeing a hash). A revoked agent's held
-- tasks go back to the queue at once; its next worker call is refused.
-- ---------------------------------------------------------------------------

CREATE FUNCTION agent_tokens_of(ws uuid, include_revoked boolean, max_rows integer)
RETURNS TABLE (id uuid, name text, kinds text[], container boolean, created_by uuid,
               created_at timestamptz, last_seen_at timestamptz, revoked_at timestamptz, workspace_ids uuid[])
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT a.id, a.name, a.kinds, a.container_name IS NOT NULL, a.created_by, a.created_at, a.last_seen_at,
           a.revoked_at,
           (SELECT array_agg(w.workspace_id ORDER BY w.workspace_id) FROM task_agent_workspaces w WHERE w.agent_id = a.id)
    FROM task_agents a
    WHERE ws = ANY (admin_workspace_ids())
      AND EXISTS (SELECT 1 FROM task_agent_workspaces w WHERE w.agent_id = a.id AND w.workspace_id = ws)
      AND (include_revoked OR a.revoked_at IS NULL)
    ORDER BY a.created_at DESC, a.id DESC
    LIMIT max_rows
$$;

-- Revokes an agent that serves a workspace the caller administers; NULL
-- for one the caller may not see. Revoking twice changes nothing.
CREATE FUNCTION agent_token_revoke(agent uuid)
RETURNS TABLE (revoked_at timestamptz, container boolean, returned integer)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    a task_agents;
    n integer := 0;
BEGIN
    SELECT * INTO a FROM task_agents t
    WHERE t.id = agent
      AND EXISTS (SELECT 1 FROM task_agent_workspaces w
                  WHERE w.agent_id = t.id AND w.workspace_id = ANY (admin_workspace_ids()))
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF a.revoked_at IS NULL THEN
        UPDATE task_agents t SET revoked_at = clock_timestamp() WHERE t.id = agent RETURNING * INTO a;
        UPDATE agent_tasks t
        SET status = CASE WHEN t.attempts >= t.max_attempts THEN 'DEAD' ELSE 'QUEUED' END,
            status_reason = 'its agent token was revoked',
            agent_id = NULL, heartbeat_at = NULL, run_after = clock_timestamp(),
            finished_at = CASE WHEN t.attempts >= t.max_attempts THEN clock_timestamp() END
        WHERE t.agent_id = agent AND t.status IN ('ASSIGNED', 'RUNNING');
        GET DIAGNOSTICS n = ROW_COUNT;
    END IF;
    RETURN QUERY SELECT a.revoked_at, a.container_name IS NOT NULL, n;
END $$;

-- Whether a token is one that was revoked (the worker API's own refusal).
CREATE FUNCTION agent_token_revoked(hash bytea) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT EXISTS (SELECT 1 FROM task_agents WHERE token_hash = hash AND revoked_at IS NOT NULL)
$$;

-- ---------------------------------------------------------------------------
-- The log names a peer's COMMAND as the peer (mosaic.peer_id, set by the
-- agent task mutations for a peer caller).
-- ---------------------------------------------------------------------------

ALTER TABLE agent_task_events DROP CONSTRAINT agent_task_events_actor_kind_check;
ALTER TABLE agent_task_events ADD CONSTRAINT agent_task_events_actor_kind_check
    CHECK (actor_kind IN ('USER', 'AGENT', 'PEER', 'SYSTEM'));

CREATE OR REPLACE FUNCTION agent_task_status_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    was text := CASE WHEN TG_OP = 'INSERT' THEN NULL ELSE OLD.status END;
    logged bigint;
    peer uuid := CASE WHEN granted_workspace_ids() <> '{}'
                      THEN nullif(current_setting('mosaic.peer_id', true), '')::uuid END;
BEGIN
    IF was IS NOT DISTINCT FROM NEW.status THEN
        RETURN NULL;
    END IF;
    INSERT INTO agent_task_events (task_id, workspace_id, from_status, to_status, actor_kind, actor_id, reason)
    VALUES (NEW.id, NEW.workspace_id, was, NEW.status,
            CASE WHEN current_user_id() IS NOT NULL THEN 'USER'
                 WHEN current_agent_id() IS NOT NULL THEN 'AGENT'
                 WHEN peer IS NOT NULL THEN 'PEER' ELSE 'SYSTEM' END,
            coalesce(current_user_id(), current_agent_id(), peer),
            NEW.status_reason)
    RETURNING id INTO logged;
    IF NEW.status = 'QUEUED' OR was IN ('ASSIGNED', 'RUNNING') THEN
        PERFORM pg_notify('mosaic_agent_task_queue', NEW.workspace_id::text);
    END IF;
    -- Subscribers (agentTaskEvents) read the event themselves, under their scope.
    PERFORM pg_notify('mosaic_agent_task_events',
        json_build_object('task', NEW.id, 'workspace', NEW.workspace_id, 'event', logged)::text);
    RETURN NULL;
END $$;

REVOKE ALL ON FUNCTION agent_task_kinds(), agent_task_container_agent(uuid, text, bytea, uuid, text),
    agent_task_demand(), agent_task_container_agents(), agent_task_container_retire(uuid, text),
    agent_tasks_reap_lost(interval), agent_tokens_of(uuid, boolean, integer), agent_token_revoke(uuid),
    agent_token_revoked(bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION agent_task_kinds(), agent_task_container_agent(uuid, text, bytea, uuid, text),
    agent_task_demand(), agent_task_container_agents(), agent_task_container_retire(uuid, text),
    agent_tasks_reap_lost(interval), agent_tokens_of(uuid, boolean, integer), agent_token_revoke(uuid),
    agent_token_revoked(bytea) TO mosaic_app;

-- agent_tasks_reap_lost replaces it.
DROP FUNCTION agent_tasks_reap(interval);
