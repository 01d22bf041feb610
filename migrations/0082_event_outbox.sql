-- Domain events (issue 17): the outbox this instance's subscribed masters,
-- and its own `events` subscribers, read.
--
-- A trigger on each resource's table writes a row in the same transaction
-- as the change: `<kind>.created|updated|deleted`, the object, the names of
-- the columns an update changed. A row gets its delivery id only after it
-- committed: `outbox_sequence()` numbers the committed rows in one
-- transaction at a time (the sequencer row's lock), so ids grow in the order
-- rows become visible and no row ever appears behind a reader's cursor
-- (an identity taken at insert would: a transaction holding id 5 may commit
-- after one holding id 6 was read). Rows are read under RLS: a local user
-- sees the events of workspaces they can read; a peer's scope (the delivery
-- worker runs each subscriber's read with its grant) sees those of its
-- granted workspaces and resources only, exactly as its reads.

CREATE TABLE event_outbox (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, -- written order
    id           bigint UNIQUE,                 -- delivery id; NULL until sequenced
    workspace_id uuid NOT NULL,                 -- no foreign key: a deletion's event outlives it
    resource     text NOT NULL,                 -- the grant resource it belongs to
    type         text NOT NULL,                 -- task.created, ...
    object_id    uuid NOT NULL,
    changed      text[] NOT NULL DEFAULT '{}',  -- columns an update changed
    at           timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX event_outbox_unsequenced ON event_outbox (seq) WHERE id IS NULL;
CREATE INDEX event_outbox_at ON event_outbox (at);

-- The last delivery id given (one row; its lock serialises sequencing).
CREATE TABLE event_outbox_sequencer (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    last_id bigint NOT NULL DEFAULT 0
);
INSERT INTO event_outbox_sequencer DEFAULT VALUES;

-- TG_ARGV: the kind (type prefix) and the grant resource. Columns whose
-- change alone is no event: bookkeeping, derived, or too frequent to
-- announce (an agent's heartbeat).
CREATE FUNCTION record_outbox_event() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    changed  text[] := '{}';
    r        jsonb;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        SELECT coalesce(array_agg(n.key ORDER BY n.key), '{}') INTO changed
        FROM jsonb_each(to_jsonb(NEW)) n
        WHERE n.key NOT IN ('updated_at', 'updated_by', 'heartbeat_at', 'search', 'title_key')
          AND to_jsonb(OLD) -> n.key IS DISTINCT FROM n.value;
        IF cardinality(changed) = 0 THEN
            RETURN NULL;
        END IF;
    END IF;
    r := CASE WHEN TG_OP = 'DELETE' THEN to_jsonb(OLD) ELSE to_jsonb(NEW) END;
    INSERT INTO event_outbox (workspace_id, resource, type, object_id, changed)
    VALUES ((r ->> 'workspace_id')::uuid, TG_ARGV[1],
            TG_ARGV[0] || '.' || CASE TG_OP WHEN 'INSERT' THEN 'created' WHEN 'UPDATE' THEN 'updated' ELSE 'deleted' END,
            (r ->> 'id')::uuid, changed);
    -- Collapsed to one per transaction; heard by the sequencer at commit.
    PERFORM pg_notify('mosaic_outbox_written', '');
    RETURN NULL;
END $$;

CREATE TRIGGER tasks_outbox AFTER INSERT OR UPDATE OR DELETE ON tasks
    FOR EACH ROW EXECUTE FUNCTION record_outbox_event('task', 'tasks');
CREATE TRIGGER projects_outbox AFTER INSERT OR UPDATE OR DELETE ON projects
    FOR EACH ROW EXECUTE FUNCTION record_outbox_event('project', 'projects');
CREATE TRIGGER events_outbox AFTER INSERT OR UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION record_outbox_event('event', 'events');
CREATE TRIGGER knowledge_entries_outbox AFTER INSERT OR UPDATE OR DELETE ON knowledge_entries
    FOR EACH ROW EXECUTE FUNCTION record_outbox_event('knowledge_entry', 'knowledge');
CREATE TRIGGER agent_tasks_outbox AFTER INSERT OR UPDATE OR DELETE ON agent_tasks
    FOR EACH ROW EXECUTE FUNCTION record_outbox_event('agent_task', 'agent_tasks');

-- Numbers the committed rows not numbered yet (at most 10,000 a call, in
-- written order) and announces the last id; returns it.
CREATE FUNCTION outbox_sequence() RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    last bigint;
    numbered bigint;
BEGIN
    SELECT last_id INTO last FROM event_outbox_sequencer FOR UPDATE;
    WITH pending AS (
        SELECT seq, last + row_number() OVER (ORDER BY seq) AS id
        FROM (SELECT seq FROM event_outbox WHERE id IS NULL ORDER BY seq LIMIT 10000) s
    )
    UPDATE event_outbox o SET id = p.id FROM pending p WHERE o.seq = p.seq;
    GET DIAGNOSTICS numbered = ROW_COUNT;
    IF numbered > 0 THEN
        last := last + numbered;
        UPDATE event_outbox_sequencer SET last_id = last;
        PERFORM pg_notify('mosaic_outbox', last::text);
    END IF;
    RETURN last;
END $$;

-- Masters subscribed to this instance's events: one row per peer, with the
-- types it asked for and the last id it acknowledged. Ends with the grant.
CREATE TABLE event_subscriptions (
    peer_id         uuid PRIMARY KEY REFERENCES peers ON DELETE CASCADE,
    types           text[] NOT NULL,
    acked_id        bigint NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    failures        integer NOT NULL DEFAULT 0,
    last_error      text
);

CREATE FUNCTION end_event_subscription() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    IF NEW.inbound_state <> 'active' THEN
        DELETE FROM event_subscriptions WHERE peer_id = NEW.id;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER peers_end_event_subscription AFTER UPDATE OF inbound_state ON peers
    FOR EACH ROW EXECUTE FUNCTION end_event_subscription();

-- Rows past the retention, or acknowledged by every subscriber and older
-- than `keep_acked` (kept that long for this instance's own subscribers to
-- resume), and never one not numbered yet.
CREATE FUNCTION prune_event_outbox(retention interval, keep_acked interval) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    pruned bigint;
    acked  bigint := (SELECT coalesce(min(acked_id), (SELECT last_id FROM event_outbox_sequencer))
                      FROM event_subscriptions);
BEGIN
    DELETE FROM event_outbox WHERE id IS NOT NULL
        AND (at < now() - retention OR (id <= acked AND at < now() - keep_acked));
    GET DIAGNOSTICS pruned = ROW_COUNT;
    RETURN pruned;
END $$;

REVOKE ALL ON FUNCTION record_outbox_event(), outbox_sequence(), end_event_subscription(),
    prune_event_outbox(interval, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outbox_sequence(), prune_event_outbox(interval, interval) TO mosaic_app;

ALTER TABLE event_outbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE event_outbox FORCE ROW LEVEL SECURITY;
GRANT SELECT ON event_outbox TO mosaic_app;
CREATE POLICY event_outbox_read ON event_outbox FOR SELECT
    USING (id IS NOT NULL AND workspace_id = ANY (readable_workspace_ids())
           AND resource_readable(resource));
CREATE POLICY event_outbox_definer ON event_outbox
    USING (current_user <> 'mosaic_app') WITH CHECK (current_user <> 'mosaic_app');

GRANT SELECT ON event_outbox_sequencer TO mosaic_app;
-- The delivery worker's and the SUBSCRIBE handler's: bookkeeping of peers,
-- no tenant data.
GRANT SELECT, INSERT, UPDATE, DELETE ON event_subscriptions TO mosaic_app;

-- Bookkeeping of peers, not tenant data, but every table has forced RLS:
-- the application role (worker, SUBSCRIBE handler) may use them whole.
ALTER TABLE event_outbox_sequencer ENABLE ROW LEVEL SECURITY;
ALTER TABLE event_outbox_sequencer FORCE ROW LEVEL SECURITY;
CREATE POLICY event_outbox_sequencer_all ON event_outbox_sequencer USING (true) WITH CHECK (true);
ALTER TABLE event_subscriptions ENABLE ROW LEVEL SECURITY;
ALTER TABLE event_subscriptions FORCE ROW LEVEL SECURITY;
CREATE POLICY event_subscriptions_all ON event_subscriptions USING (true) WITH CHECK (true);
