-- Per-user agent containers (issue 5): the instance's agent configuration,
-- each user's agent (settings and last known container state) and the
-- user's secrets, sealed with AEAD by the application (never plaintext here).
--
-- Versions: every change of the instance configuration, of a user's settings
-- or of a user's secrets takes a new number from one sequence, so a user's
-- effective configuration version, greatest(instance, user), only grows and
-- changes whenever anything their container is built from changes.

CREATE SEQUENCE agent_config_version;

-- Instance-level: one row, readable by every local user, changed by instance admins.
CREATE TABLE agent_config (
    singleton        boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    image            text NOT NULL CHECK (length(btrim(image)) BETWEEN 1 AND 255),
    command          text[],                         -- NULL: the image's own
    env              jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(env) = 'object'),
    port             integer NOT NULL DEFAULT 8080 CHECK (port BETWEEN 1 AND 65535),
    health_path      text NOT NULL DEFAULT '/' CHECK (health_path LIKE '/%'),
    memory_bytes     bigint NOT NULL DEFAULT 268435456 CHECK (memory_bytes >= 6291456),
    nano_cpus        bigint NOT NULL DEFAULT 1000000000 CHECK (nano_cpus BETWEEN 1000000 AND 64000000000),
    pids_limit       bigint NOT NULL DEFAULT 256 CHECK (pids_limit BETWEEN 8 AND 65536),
    read_only_rootfs boolean NOT NULL DEFAULT true,
    idle_timeout_s   integer NOT NULL DEFAULT 900 CHECK (idle_timeout_s > 0),
    version          bigint NOT NULL DEFAULT nextval('agent_config_version'),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- One row per user who has (had) an agent: per-user settings and the state
-- this instance last saw of the user's container.
CREATE TABLE agents (
    user_id          uuid PRIMARY KEY REFERENCES users ON DELETE CASCADE,
    env              jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(env) = 'object'),
    idle_timeout_s   integer CHECK (idle_timeout_s > 0),   -- NULL: the instance's
    settings_version bigint NOT NULL DEFAULT nextval('agent_config_version'),
    container_name   text NOT NULL,
    container_id     text,
    status           text NOT NULL DEFAULT 'STOPPED'
                     CHECK (status IN ('STOPPED', 'STARTING', 'RUNNING', 'FAILED')),
    host_port        integer,
    running_version  bigint,          -- the effective version the container was built from
    started_at       timestamptz,
    stopped_at       timestamptz,
    last_active_at   timestamptz,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE agent_secrets (
    user_id    uuid NOT NULL REFERENCES users ON DELETE CASCADE,
    name       text NOT NULL CHECK (name ~ '^[A-Za-z_][A-Za-z0-9_]{0,63}$'),
    sealed     bytea NOT NULL,   -- nonce || ChaCha20-Poly1305(value), AAD = user id and name
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, name)
);

-- ---------------------------------------------------------------------------
-- Version bumps.
-- ---------------------------------------------------------------------------

CREATE FUNCTION agent_config_bump() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    IF (to_jsonb(NEW) - 'version' - 'updated_at') IS DISTINCT FROM (to_jsonb(OLD) - 'version' - 'updated_at') THEN
        NEW.version := nextval('agent_config_version');
        NEW.updated_at := now();
    ELSE
        NEW.version := OLD.version;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER agent_config_version BEFORE UPDATE ON agent_config
    FOR EACH ROW EXECUTE FUNCTION agent_config_bump();

-- A user's settings (env, idle timeout) are part of what the container is built from.
CREATE FUNCTION agent_settings_bump() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    IF NEW.env IS DISTINCT FROM OLD.env THEN
        NEW.settings_version := nextval('agent_config_version');
    ELSE
        NEW.settings_version := greatest(NEW.settings_version, OLD.settings_version);
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END $$;
CREATE TRIGGER agents_settings_version BEFORE UPDATE ON agents
    FOR EACH ROW EXECUTE FUNCTION agent_settings_bump();

-- A secret that is set or removed changes the container's environment.
CREATE FUNCTION agent_secret_bump() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    UPDATE agents SET settings_version = nextval('agent_config_version')
    WHERE user_id = coalesce(NEW.user_id, OLD.user_id);
    RETURN NULL;
END $$;
CREATE TRIGGER agent_secrets_version AFTER INSERT OR UPDATE OR DELETE ON agent_secrets
    FOR EACH ROW EXECUTE FUNCTION agent_secret_bump();

-- ---------------------------------------------------------------------------
-- Narrow definer functions for what no single user's scope covers.
-- ---------------------------------------------------------------------------

CREATE FUNCTION current_user_is_admin() RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT coalesce((SELECT is_admin FROM users WHERE id = current_user_id()), false)
$$;

-- First start: the configured defaults become the instance's agent configuration.
CREATE FUNCTION agent_config_seed(img text, p integer, idle integer) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    INSERT INTO agent_config (image, port, idle_timeout_s) VALUES (img, p, idle)
    ON CONFLICT (singleton) DO NOTHING
$$;

-- Every agent of the instance, for the reaper, reconciliation at start and the
-- instance administrators' overview. No secrets, no settings.
CREATE FUNCTION agents_overview()
RETURNS TABLE (user_id uuid, email text, container_name text, container_id text, status text,
               host_port integer, running_version bigint, desired_version bigint,
               idle_timeout_s integer, started_at timestamptz, stopped_at timestamptz,
               last_active_at timestamptz, last_error text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT a.user_id, u.email, a.container_name, a.container_id, a.status, a.host_port,
           a.running_version, greatest(a.settings_version, c.version),
           coalesce(a.idle_timeout_s, c.idle_timeout_s), a.started_at, a.stopped_at,
           a.last_active_at, a.last_error
    FROM agents a JOIN users u ON u.id = a.user_id CROSS JOIN agent_config c
    ORDER BY u.email
$$;

-- ---------------------------------------------------------------------------
-- Row-Level Security.
-- ---------------------------------------------------------------------------

ALTER TABLE agent_config ENABLE ROW LEVEL SECURITY;
ALTER TABLE agent_config FORCE ROW LEVEL SECURITY;
ALTER TABLE agents ENABLE ROW LEVEL SECURITY;
ALTER TABLE agents FORCE ROW LEVEL SECURITY;
ALTER TABLE agent_secrets ENABLE ROW LEVEL SECURITY;
ALTER TABLE agent_secrets FORCE ROW LEVEL SECURITY;

CREATE POLICY agent_config_read ON agent_config FOR SELECT USING (true);
CREATE POLICY agent_config_change ON agent_config FOR UPDATE
    USING (current_user_is_admin()) WITH CHECK (current_user_is_admin());

CREATE POLICY agents_own ON agents FOR ALL
    USING (user_id = current_user_id()) WITH CHECK (user_id = current_user_id());

CREATE POLICY agent_secrets_own ON agent_secrets FOR ALL
    USING (user_id = current_user_id()) WITH CHECK (user_id = current_user_id());

GRANT SELECT, UPDATE ON agent_config TO mosaic_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON agents, agent_secrets TO mosaic_app;
GRANT USAGE ON SEQUENCE agent_config_version TO mosaic_app;  -- agents.settings_version's default
REVOKE ALL ON FUNCTION agents_overview() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION agents_overview() TO mosaic_app;
REVOKE ALL ON FUNCTION agent_config_seed(text, integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION agent_config_seed(text, integer, integer) TO mosaic_app;
