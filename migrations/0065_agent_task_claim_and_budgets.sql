-- Agent tasks (issue 15): the claim as one function, so a claim is one
-- round trip and the lock that keeps the instance's cap is held only while
-- PostgreSQL runs it (0063's claim held it across two round trips).

-- The claim of `agent` (its token checked by src/http/worker.rs): among
-- the queued tasks of the agent's workspaces whose retry delay has passed,
-- each workspace offers its best (priority, then age; SKIP LOCKED), and
-- the workspace with the fewest tasks held now wins, then priority, then
-- age. Nothing is claimed while the instance holds `max_running` tasks,
-- nor a task that a budget without headroom covers (below).
-- Runs as the caller, in the agent's scope, so 0063's policies apply.
-- One row: the claimed task, or only `at_cap` and `next_due_ms` (when the
-- next delayed retry is due or an exhausted budget resets).
CREATE FUNCTION agent_task_claim(agent uuid, max_running bigint, lock_timeout_ms integer)
RETURNS TABLE (id uuid, workspace_id uuid, title text, kind text, priority smallint, instructions jsonb,
               attempts integer, max_attempts integer, checkpoint jsonb, checkpoint_step integer,
               at_cap boolean, next_due_ms float8)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, public AS $$
BEGIN
    PERFORM set_config('mosaic.agent_id', agent::text, true),
            set_config('lock_timeout', lock_timeout_ms::text, true);
    -- Serialises claims, so the cap holds however many claim at once.
    PERFORM pg_advisory_xact_lock(7885648334766149397);
    RETURN QUERY
    WITH ws AS (
        SELECT w AS ws_id,
               (SELECT count(*) FROM agent_tasks h
                WHERE h.workspace_id = w AND h.status IN ('ASSIGNED', 'RUNNING')) AS busy
        FROM unnest(agent_workspace_ids()) AS w
    ), pick AS (
        SELECT c.id FROM ws CROSS JOIN LATERAL (
            SELECT t.id, t.priority, t.created_at FROM agent_tasks t
            WHERE t.workspace_id = ws.ws_id AND t.status = 'QUEUED'
              AND t.run_after <= clock_timestamp()
              AND NOT agent_budget_exhausted(t.workspace_id, t.project_id, t.created_by)
            ORDER BY t.priority DESC, t.created_at, t.id
            LIMIT 1
            FOR UPDATE SKIP LOCKED
        ) c
        WHERE (SELECT agent_tasks_held()) < max_running
        ORDER BY ws.busy, c.priority DESC, c.created_at, c.id
        LIMIT 1
    )
    UPDATE agent_tasks t
    SET status = 'ASSIGNED', agent_id = agent, attempts = t.attempts + 1,
        heartbeat_at = clock_timestamp(),
        status_reason = format('claimed, attempt %s of %s', t.attempts + 1, t.max_attempts)
    FROM pick WHERE t.id = pick.id
    RETURNING t.id, t.workspace_id, t.title, t.kind, t.priority, t.instructions, t.attempts,
        t.max_attempts, t.checkpoint, t.checkpoint_step, false, NULL::float8;
    IF FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT NULL::uuid, NULL::uuid, NULL::text, NULL::text, NULL::smallint, NULL::jsonb, NULL::integer,
           NULL::integer, NULL::jsonb, NULL::integer,
           agent_tasks_held() >= max_running,
           -- Only retries still delayed and budgets' resets: a slot freed,
           -- work queued or a budget raised is announced (NOTIFY), so a
           -- claim at the cap waits, not polls.
           extract(epoch FROM least(
               (SELECT min(q.run_after) FROM agent_tasks q
                WHERE q.status = 'QUEUED' AND q.workspace_id = ANY (agent_workspace_ids())
                  AND q.run_after > clock_timestamp()),
               agent_budgets_next_reset()) - clock_timestamp())::float8 * 1000;
END $$;

REVOKE ALL ON FUNCTION agent_task_claim(uuid, bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION agent_task_claim(uuid, bigint, integer) TO mosaic_app;

-- ---------------------------------------------------------------------------
-- Usage budgets. A budget belongs to a workspace and covers its agent
-- tasks: all of them, those of one project, or those one user created. It
-- counts one unit (tokens, cost units, agent minutes) over a window that
-- resets: DAILY or MONTHLY (stepping from its first reset), or once AT a
-- given time. Agents' usage reports charge every budget covering their
-- task (agent_budget_charge); a claim passes over a task that a budget
-- without headroom covers (agent_budget_exhausted), and an agent whose
-- task has none is stopped after its checkpoint (src/agent_tasks/queue.rs).
-- A window that has passed counts as empty at once; its row is rolled
-- forward at the next charge.
-- ---------------------------------------------------------------------------

ALTER TABLE agent_tasks ADD COLUMN project_id uuid;
ALTER TABLE agent_tasks ADD FOREIGN KEY (workspace_id, project_id)
    REFERENCES projects (workspace_id, id) ON DELETE CASCADE;

CREATE TABLE agent_budgets (
    id                uuid PRIMARY KEY,
    workspace_id      uuid NOT NULL REFERENCES workspaces ON DELETE CASCADE,
    project_id        uuid,
    user_id           uuid REFERENCES users ON DELETE CASCADE,
    unit              text NOT NULL CHECK (unit IN ('TOKENS', 'COST', 'AGENT_MINUTES')),
    window_kind       text NOT NULL CHECK (window_kind IN ('DAILY', 'MONTHLY', 'AT')),
    -- In the unit (whole minutes for AGENT_MINUTES).
    allocated         bigint NOT NULL CHECK (allocated BETWEEN 0 AND 1000000000000000),
    -- In what agents report: tokens, cost units, agent milliseconds.
    consumed          bigint NOT NULL DEFAULT 0 CHECK (consumed >= 0),
    window_started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- The next reset; none once an AT budget's reset has passed.
    resets_at         timestamptz CHECK (resets_at IS NOT NULL OR window_kind = 'AT'),
    created_by        uuid REFERENCES users ON DELETE SET NULL,
    created_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK (project_id IS NULL OR user_id IS NULL),
    FOREIGN KEY (workspace_id, project_id) REFERENCES projects (workspace_id, id) ON DELETE CASCADE,
    UNIQUE NULLS NOT DISTINCT (workspace_id, project_id, user_id, unit)
);

CREATE TRIGGER agent_budgets_touch BEFORE UPDATE ON agent_budgets
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

-- What agents report per unit of the budget.
CREATE FUNCTION agent_budget_scale(unit text) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE unit WHEN 'AGENT_MINUTES' THEN 60000 ELSE 1 END
$$;

-- The first reset of a DAILY or MONTHLY window after `now`, stepping from
-- the reset `at` (which has passed). Days and months are UTC's.
CREATE FUNCTION agent_budget_next_reset(kind text, at timestamptz, now timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE SET timezone = 'UTC' AS $$
    SELECT CASE kind
        WHEN 'DAILY' THEN at + (floor(extract(epoch FROM now - at) / 86400) + 1) * interval '1 day'
        WHEN 'MONTHLY' THEN at + ((extract(year FROM age(now, at)) * 12 + extract(month FROM age(now, at))) + 1)
                                 * interval '1 month'
    END
$$;

-- A budget as it stands now: a passed window is empty and the next one begins.
CREATE FUNCTION agent_budget_now(b agent_budgets, OUT consumed bigint, OUT window_started_at timestamptz,
                                 OUT resets_at timestamptz)
LANGUAGE plpgsql STABLE SET timezone = 'UTC' AS $$
BEGIN
    IF b.resets_at IS NULL OR b.resets_at > clock_timestamp() THEN
        consumed := b.consumed; window_started_at := b.window_started_at; resets_at := b.resets_at;
    ELSIF b.window_kind = 'AT' THEN
        consumed := 0; window_started_at := b.resets_at; resets_at := NULL;
    ELSE
        consumed := 0;
        resets_at := agent_budget_next_reset(b.window_kind, b.resets_at, clock_timestamp());
        window_started_at := resets_at - CASE b.window_kind WHEN 'DAILY' THEN interval '1 day' ELSE interval '1 month' END;
    END IF;
END $$;

-- Whether a budget without headroom covers a task of workspace `ws`,
-- project `project`, created by `creator`: for the claim, the agent's
-- reports and AgentTask.blockedBy. Answers only about workspaces the
-- caller reads or its agent serves.
CREATE FUNCTION agent_budget_exhausted(ws uuid, project uuid, creator uuid) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT EXISTS (
        SELECT 1 FROM agent_budgets b
        WHERE b.workspace_id = ws
          AND (b.project_id IS NULL OR b.project_id = project)
          AND (b.user_id IS NULL OR b.user_id = creator)
          AND CASE WHEN b.resets_at <= clock_timestamp() THEN 0 ELSE b.consumed END
              >= b.allocated * agent_budget_scale(b.unit)
    ) AND (ws = ANY (agent_workspace_ids()) OR ws = ANY (readable_workspace_ids()) OR current_user_is_admin())
$$;

-- The next reset of an exhausted budget in the agent's workspaces: when a
-- waiting claim looks again.
CREATE FUNCTION agent_budgets_next_reset() RETURNS timestamptz
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT min(b.resets_at) FROM agent_budgets b
    WHERE b.workspace_id = ANY (agent_workspace_ids()) AND b.resets_at > clock_timestamp()
      AND b.consumed >= b.allocated * agent_budget_scale(b.unit)
$$;

-- An agent's usage report on task `task`, which it holds: charges every
-- budget covering the task (rolling a passed window forward first) and
-- answers whether one of them has no headroom left.
CREATE FUNCTION agent_budget_charge(task uuid, tokens bigint, cost bigint, agent_ms bigint) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE t record;
BEGIN
    SELECT a.workspace_id, a.project_id, a.created_by INTO t FROM agent_tasks a
    WHERE a.id = task AND a.agent_id = current_agent_id() AND a.status IN ('ASSIGNED', 'RUNNING');
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE agent_budgets b
    SET (consumed, window_started_at, resets_at) = (
            SELECT n.consumed + CASE b.unit WHEN 'TOKENS' THEN tokens WHEN 'COST' THEN cost ELSE agent_ms END,
                   n.window_started_at, n.resets_at
            FROM agent_budget_now(b) n)
    WHERE b.workspace_id = t.workspace_id
      AND (b.project_id IS NULL OR b.project_id = t.project_id)
      AND (b.user_id IS NULL OR b.user_id = t.created_by);
    RETURN agent_budget_exhausted(t.workspace_id, t.project_id, t.created_by);
END $$;

ALTER TABLE agent_budgets ENABLE ROW LEVEL SECURITY;
ALTER TABLE agent_budgets FORCE ROW LEVEL SECURITY;
-- Members see their workspace's budgets; owners and admins of the
-- workspace and instance admins set and reset them.
CREATE POLICY agent_budgets_read ON agent_budgets FOR SELECT USING (
    workspace_id = ANY ((SELECT readable_workspace_ids())::uuid[]) OR (SELECT current_user_is_admin())
);
CREATE POLICY agent_budgets_insert ON agent_budgets FOR INSERT WITH CHECK (
    workspace_id = ANY ((SELECT admin_workspace_ids())::uuid[]) OR (SELECT current_user_is_admin())
);
CREATE POLICY agent_budgets_update ON agent_budgets FOR UPDATE
    USING (workspace_id = ANY ((SELECT admin_workspace_ids())::uuid[]) OR (SELECT current_user_is_admin()))
    WITH CHECK (workspace_id = ANY ((SELECT admin_workspace_ids())::uuid[]) OR (SELECT current_user_is_admin()));
GRANT SELECT, INSERT, UPDATE ON agent_budgets TO mosaic_app;

REVOKE ALL ON FUNCTION agent_budget_exhausted(uuid, uuid, uuid), agent_budgets_next_reset(),
    agent_budget_charge(uuid, bigint, bigint, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION agent_budget_exhausted(uuid, uuid, uuid), agent_budgets_next_reset(),
    agent_budget_charge(uuid, bigint, bigint, bigint) TO mosaic_app;

-- A budget gained headroom (raised, reset, a new window): waiting claims
-- look again, since a task it held back may be claimable now.
CREATE FUNCTION agent_budget_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    PERFORM pg_notify('mosaic_agent_task_queue', NEW.workspace_id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER agent_budgets_changed AFTER UPDATE OF allocated, consumed ON agent_budgets
    FOR EACH ROW WHEN (NEW.allocated > OLD.allocated OR NEW.consumed < OLD.consumed)
    EXECUTE FUNCTION agent_budget_changed();

-- A trigger's function runs without EXECUTE; nobody calls this one directly.
REVOKE ALL ON FUNCTION agent_budget_changed() FROM PUBLIC;
