-- One replica manages a user's agent container at a time (issue 18): the
-- replica holding the row's lease starts, restarts and stops it; the others
-- proxy to the container it runs (one Docker engine per instance). The
-- holder renews the lease on every reaper tick while the agent runs and lets
-- it go when the agent stops. A replica that dies leaves its leases to
-- expire; the next replica that needs the agent (a request, or its reaper
-- finding it running) takes it over.

ALTER TABLE agents
    ADD COLUMN managed_by  uuid,          -- the holding replica (a process id, not persisted)
    ADD COLUMN lease_until timestamptz,
    ADD CONSTRAINT agents_lease_whole CHECK ((managed_by IS NULL) = (lease_until IS NULL));

-- The listing the reapers read gains who manages each agent.
DROP FUNCTION agents_overview();
CREATE FUNCTION agents_overview()
RETURNS TABLE (user_id uuid, email text, container_name text, container_id text, status text,
               host_port integer, running_version bigint, desired_version bigint,
               idle_timeout_s integer, started_at timestamptz, stopped_at timestamptz,
               last_active_at timestamptz, last_error text, managed_by uuid, lease_live boolean)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT a.user_id, u.email, a.container_name, a.container_id, a.status, a.host_port,
           a.running_version, greatest(a.settings_version, c.version),
           coalesce(a.idle_timeout_s, c.idle_timeout_s), a.started_at, a.stopped_at,
           a.last_active_at, a.last_error, a.managed_by, coalesce(a.lease_until > now(), false)
    FROM agents a JOIN users u ON u.id = a.user_id CROSS JOIN agent_config c
    ORDER BY u.email
$$;
REVOKE ALL ON FUNCTION agents_overview() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION agents_overview() TO mosaic_app;
