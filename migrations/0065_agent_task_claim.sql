-- Agent tasks (issue 15): the claim as one function, so a claim is one
-- round trip and the lock that keeps the instance's cap is held only while
-- PostgreSQL runs it (0063's claim held it across two round trips).

-- The claim of `agent` (its token checked by src/http/worker.rs): among
-- the queued tasks of the agent's workspaces whose retry delay has passed,
-- each workspace offers its best (priority, then age; SKIP LOCKED), and
-- the workspace with the fewest tasks held now wins, then priority, then
-- age. Nothing is claimed while the instance holds `max_running` tasks.
-- Runs as the caller, in the agent's scope, so 0063's policies apply.
-- One row: the claimed task, or only `at_cap` and `next_due_ms` (when the
-- next delayed retry is due).
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
           -- Only retries still delayed: a slot freed or work queued is
           -- announced (NOTIFY), so a claim at the cap waits, not polls.
           (SELECT extract(epoch FROM min(q.run_after) - clock_timestamp())::float8 * 1000
            FROM agent_tasks q WHERE q.status = 'QUEUED' AND q.workspace_id = ANY (agent_workspace_ids())
              AND q.run_after > clock_timestamp());
END $$;

REVOKE ALL ON FUNCTION agent_task_claim(uuid, bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION agent_task_claim(uuid, bigint, integer) TO mosaic_app;
