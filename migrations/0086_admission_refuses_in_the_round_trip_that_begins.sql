-- A peer's QUERY or COMMAND was admitted (admit_peer_request: the nonce,
-- then a token from the peer's bucket) in a round trip of its own before
-- the request's transaction began in another. Both now go in one simple
-- query: the admission in a transaction of its own, committed first, then
-- BEGIN and the scope. A simple query stops at its first error, so an
-- admission that is not 'new' raises, and the request's transaction is
-- never begun: SQLSTATE MSADM, the outcome as the message ('replayed',
-- 'expired' or 'limited') and, when limited, the milliseconds until a
-- token is free as the detail. The refusal writes nothing (the nonce of a
-- limited request is not kept: it was never served).

CREATE FUNCTION admit_peer_request_or_refuse(
    p_origin text, p_nonce text, p_keep_until bigint, p_rate double precision, p_burst double precision)
RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, public AS $$
DECLARE
    admitted record;
BEGIN
    SELECT * INTO admitted FROM admit_peer_request(p_origin, p_nonce, p_keep_until, p_rate, p_burst);
    IF admitted.outcome <> 'new' THEN
        RAISE EXCEPTION USING ERRCODE = 'MSADM', MESSAGE = admitted.outcome,
            DETAIL = coalesce(admitted.retry_after_ms::text, '');
    END IF;
END
$$;

REVOKE ALL ON FUNCTION admit_peer_request_or_refuse(text, text, bigint, double precision, double precision) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION admit_peer_request_or_refuse(text, text, bigint, double precision, double precision) TO mosaic_app;
