-- Federation: this instance's keys, the peers an admin registered, and the
-- audit trail of every change to a peering. Instance-level tables (not
-- tenant data): the application role reads them; admin checks are in the
-- service layer. Nothing a peer returns is ever stored here.

CREATE TABLE instance_keys (
    key_id             text PRIMARY KEY,
    public_key         bytea NOT NULL CHECK (length(public_key) = 32),
    private_key_sealed bytea NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    retired_at         timestamptz,  -- no longer signs
    valid_until        timestamptz   -- no longer verifies (set at retirement)
);
CREATE UNIQUE INDEX instance_keys_one_current ON instance_keys ((true)) WHERE retired_at IS NULL;

-- inbound_state: may this peer query us (what we granted it);
-- outbound_state: may we query it (what it granted us).
CREATE TABLE peers (
    id               uuid PRIMARY KEY,  -- the peer's instance id
    name             text NOT NULL,
    base_url         text NOT NULL,
    keys             jsonb NOT NULL DEFAULT '[]',
    schema_hash      text,
    inbound_state    text NOT NULL DEFAULT 'none'
                     CHECK (inbound_state IN ('none', 'pending', 'active', 'suspended', 'revoked', 'rejected')),
    outbound_state   text NOT NULL DEFAULT 'none'
                     CHECK (outbound_state IN ('none', 'requested', 'active', 'suspended', 'revoked', 'rejected')),
    grant_workspaces uuid[] NOT NULL DEFAULT '{}',
    grant_read_write boolean NOT NULL DEFAULT false,
    grant_users      text[],  -- remote users (e-mail) the grant is limited to; NULL: any
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE peer_audit (
    id      bigserial PRIMARY KEY,
    peer_id uuid NOT NULL,
    actor   text NOT NULL,
    action  text NOT NULL,
    details jsonb NOT NULL DEFAULT '{}',
    at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX peer_audit_peer ON peer_audit (peer_id, id);

GRANT SELECT ON instance_keys TO mosaic_app;
GRANT SELECT, INSERT, UPDATE ON peers TO mosaic_app;
GRANT SELECT, INSERT ON peer_audit TO mosaic_app;
GRANT USAGE ON SEQUENCE peer_audit_id_seq TO mosaic_app;

-- Instance admins grant workspaces to peers without being members of them,
-- so existence is checked by a narrow definer function.
CREATE FUNCTION missing_workspaces(ids uuid[]) RETURNS uuid[]
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT coalesce(array_agg(i), '{}') FROM unnest(ids) AS i
    WHERE NOT EXISTS (SELECT 1 FROM workspaces w WHERE w.id = i)
$$;

-- Workspaces by exact name, for operators naming grants on the command line.
CREATE FUNCTION workspace_ids_named(n text) RETURNS uuid[]
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT coalesce(array_agg(id), '{}') FROM workspaces WHERE name = n
$$;
