-- The request audit (issue 16): one row per request a peer made to this
-- instance, allowed, refused (with the precise code, also for refusals that
-- look alike from outside) or failed. Written off the request path in
-- batches (federation/audit.rs) through record_federation_audit; read by
-- instance administrators only; pruned after federation.audit_retention_days.

CREATE TABLE federation_audit (
    id          uuid PRIMARY KEY,        -- UUIDv7: in the order received
    at          timestamptz NOT NULL,
    peer_id     uuid,                    -- as verified, or only as claimed (verified false)
    verified    boolean NOT NULL,
    remote_user text,
    verb        text NOT NULL,
    resources   text[] NOT NULL DEFAULT '{}',
    query_hash  text,                    -- hex SHA-256 of the normalised document
    outcome     text NOT NULL CHECK (outcome IN ('ALLOWED', 'REFUSED', 'FAILED')),
    code        text,
    rows        bigint NOT NULL,
    bytes       bigint NOT NULL,
    latency_ms  bigint NOT NULL
);
CREATE INDEX federation_audit_at ON federation_audit (at);
CREATE INDEX federation_audit_peer ON federation_audit (peer_id, id);

CREATE FUNCTION record_federation_audit(entries jsonb) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    INSERT INTO federation_audit (id, at, peer_id, verified, remote_user, verb, resources,
                                  query_hash, outcome, code, rows, bytes, latency_ms)
    SELECT id, at, peer_id, verified, remote_user, verb, resources,
           query_hash, outcome, code, rows, bytes, latency_ms
    FROM jsonb_to_recordset(entries) AS e(id uuid, at timestamptz, peer_id uuid, verified boolean,
         remote_user text, verb text, resources text[], query_hash text, outcome text, code text,
         rows bigint, bytes bigint, latency_ms bigint)
    ON CONFLICT (id) DO NOTHING
$$;

CREATE FUNCTION prune_federation_audit(keep_days integer) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    pruned bigint;
BEGIN
    DELETE FROM federation_audit WHERE at < now() - make_interval(days => keep_days);
    GET DIAGNOSTICS pruned = ROW_COUNT;
    RETURN pruned;
END
$$;

REVOKE ALL ON FUNCTION record_federation_audit(jsonb), prune_federation_audit(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION record_federation_audit(jsonb), prune_federation_audit(integer) TO mosaic_app;

ALTER TABLE federation_audit ENABLE ROW LEVEL SECURITY;
ALTER TABLE federation_audit FORCE ROW LEVEL SECURITY;
GRANT SELECT ON federation_audit TO mosaic_app;
CREATE POLICY federation_audit_admins ON federation_audit FOR SELECT USING (current_user_is_admin());
CREATE POLICY federation_audit_definer ON federation_audit
    USING (current_user <> 'mosaic_app') WITH CHECK (current_user <> 'mosaic_app');
