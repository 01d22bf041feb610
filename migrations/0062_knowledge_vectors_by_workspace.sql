-- The in-memory vector index keeps each workspace's vectors together, so a
-- semantic search scans only the workspaces its caller reads (PostgreSQL
-- then checks the few best under the policies): the worker's functions now
-- say which workspace each entry is in.

DROP FUNCTION knowledge_embedding_work(text, uuid[], uuid, integer);
DROP FUNCTION knowledge_embedding_vectors(text, uuid, integer);

-- As in 0061, with the entry's workspace.
CREATE FUNCTION knowledge_embedding_work(m text, ids uuid[], after uuid, lim integer)
RETURNS TABLE (entry_id uuid, workspace_id uuid, body text, digest bytea)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT s.id, s.workspace_id, s.body, s.digest FROM (
        SELECT e.id, e.workspace_id, b.body, sha256(convert_to(b.body, 'UTF8')) AS digest
        FROM knowledge_entries e, knowledge_embedding_text(e.title, e.content) AS b(body)
        WHERE knowledge_unscoped() AND e.status <> 'ARCHIVED'
          AND (ids IS NULL OR e.id = ANY (ids))
          AND (after IS NULL OR e.id > after)
    ) s
    WHERE NOT EXISTS (SELECT 1 FROM knowledge_embeddings k
                      WHERE k.entry_id = s.id AND k.model = m AND k.content_sha256 = s.digest)
    ORDER BY s.id
    LIMIT lim
$$;

-- As in 0061, with the entry's workspace.
CREATE FUNCTION knowledge_embedding_vectors(m text, after uuid, lim integer)
RETURNS TABLE (entry_id uuid, workspace_id uuid, vector bytea)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT k.entry_id, k.workspace_id, k.vector FROM knowledge_embeddings k
    WHERE knowledge_unscoped() AND k.model = m AND (after IS NULL OR k.entry_id > after)
    ORDER BY k.entry_id
    LIMIT lim
$$;

REVOKE ALL ON FUNCTION knowledge_embedding_work(text, uuid[], uuid, integer),
    knowledge_embedding_vectors(text, uuid, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION knowledge_embedding_work(text, uuid[], uuid, integer),
    knowledge_embedding_vectors(text, uuid, integer) TO mosaic_app;

-- The index semantic search used to list every visible entry through is no
-- longer read.
DROP INDEX knowledge_entries_ws_visible;
