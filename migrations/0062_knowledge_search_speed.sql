-- Knowledge search and links at 100,000 entries (benches/knowledge.rs).
--
-- The in-memory vector index keeps each workspace's vectors together, so a
-- semantic search scans only the workspaces its caller reads (PostgreSQL
-- then checks the few best under the policies): the worker's functions now
-- say which workspace each entry is in.

DROP FUNCTION knowledge_embedding_work(text, uuid[], uuid, integer);
DROP FUNCTION knowledge_embedding_vectors(text, uuid, integer);

-- As in 0061, with the entry's workspace, and planned for each case: the
-- queue's ids by the primary key, a sweep's batch from `after` in key order
-- (so it stops at `lim` stale entries). One query for both, with `ids IS
-- NULL OR …` and `after IS NULL OR …`, could use neither index: every
-- batch read and hashed every entry (1.1 s a batch at 100,000 entries).
CREATE FUNCTION knowledge_embedding_work(m text, ids uuid[], after uuid, lim integer)
RETURNS TABLE (entry_id uuid, workspace_id uuid, body text, digest bytea)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
#variable_conflict use_column
BEGIN
    IF NOT knowledge_unscoped() THEN
        RETURN;
    END IF;
    IF ids IS NOT NULL THEN
        RETURN QUERY SELECT s.id, s.workspace_id, s.body, s.digest FROM (
            SELECT e.id, e.workspace_id, b.body, sha256(convert_to(b.body, 'UTF8')) AS digest
            FROM knowledge_entries e, knowledge_embedding_text(e.title, e.content) AS b(body)
            WHERE e.id = ANY (ids) AND e.status <> 'ARCHIVED' AND (after IS NULL OR e.id > after)
        ) s
        WHERE NOT EXISTS (SELECT 1 FROM knowledge_embeddings k
                          WHERE k.entry_id = s.id AND k.model = m AND k.content_sha256 = s.digest)
        ORDER BY s.id
        LIMIT lim;
    ELSE
        RETURN QUERY SELECT s.id, s.workspace_id, s.body, s.digest FROM (
            SELECT e.id, e.workspace_id, b.body, sha256(convert_to(b.body, 'UTF8')) AS digest
            FROM knowledge_entries e, knowledge_embedding_text(e.title, e.content) AS b(body)
            WHERE e.id > coalesce(after, '00000000-0000-0000-0000-000000000000'::uuid)
              AND e.status <> 'ARCHIVED'
        ) s
        WHERE NOT EXISTS (SELECT 1 FROM knowledge_embeddings k
                          WHERE k.entry_id = s.id AND k.model = m AND k.content_sha256 = s.digest)
        ORDER BY s.id
        LIMIT lim;
    END IF;
END
$$;

-- As in 0061, with the entry's workspace, from `after` by the primary key
-- (`after IS NULL OR …` made every batch of the index's load read them all:
-- 18 s to load 100,000 vectors). gen_random_uuid() never makes the nil id.
CREATE FUNCTION knowledge_embedding_vectors(m text, after uuid, lim integer)
RETURNS TABLE (entry_id uuid, workspace_id uuid, vector bytea)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT k.entry_id, k.workspace_id, k.vector FROM knowledge_embeddings k
    WHERE knowledge_unscoped() AND k.model = m
      AND k.entry_id > coalesce(after, '00000000-0000-0000-0000-000000000000'::uuid)
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

-- Full-text candidates (0060), faster and never missing the best: the
-- readable workspaces and the caller are read once, not for every row (a
-- function call in a WHERE clause is evaluated per row; a sub-select is an
-- init plan), and the entries with every word come first, then those with
-- some of them, up to `lim` in all: a cap can no longer leave out an entry
-- that would rank first while a word common to most entries fills it.
DROP FUNCTION knowledge_text_candidates(uuid[], tsquery, integer);
CREATE FUNCTION knowledge_text_candidates(ws uuid[], all_words tsquery, some_words tsquery, lim integer)
RETURNS SETOF uuid
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    found integer;
BEGIN
    RETURN QUERY SELECT e.id FROM knowledge_entries e
        WHERE e.search @@ all_words
          AND e.workspace_id = ANY ((SELECT readable_workspace_ids())::uuid[])
          AND (ws IS NULL OR e.workspace_id = ANY (ws))
          AND (e.status <> 'DRAFT' OR e.author_id = (SELECT current_user_id()))
        LIMIT lim;
    GET DIAGNOSTICS found = ROW_COUNT;
    IF found < lim AND some_words IS DISTINCT FROM all_words THEN
        RETURN QUERY SELECT e.id FROM knowledge_entries e
            WHERE e.search @@ some_words AND NOT e.search @@ all_words
              AND e.workspace_id = ANY ((SELECT readable_workspace_ids())::uuid[])
              AND (ws IS NULL OR e.workspace_id = ANY (ws))
              AND (e.status <> 'DRAFT' OR e.author_id = (SELECT current_user_id()))
            LIMIT lim - found;
    END IF;
END
$$;

-- As in 0060, with the workspaces and the caller read once.
CREATE OR REPLACE FUNCTION knowledge_title_candidates(ws uuid[], words text, lim integer) RETURNS SETOF uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT e.id FROM knowledge_entries e
    WHERE words <% lower(e.title)
      AND e.workspace_id = ANY ((SELECT readable_workspace_ids())::uuid[])
      AND (ws IS NULL OR e.workspace_id = ANY (ws))
      AND (e.status <> 'DRAFT' OR e.author_id = (SELECT current_user_id()))
    LIMIT lim
$$;

REVOKE ALL ON FUNCTION knowledge_text_candidates(uuid[], tsquery, tsquery, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION knowledge_text_candidates(uuid[], tsquery, tsquery, integer) TO mosaic_app;

-- A link's entry as in 0060 (by slug first, then by the oldest title
-- match; archived entries are not targets), as two lookups: the unique
-- (workspace, slug) index answers most links alone, and the title is looked
-- up only when no slug matched (an Append stops at its LIMIT), instead of
-- a bitmap of both and a sort for every link (a graph of 1,000 entries
-- resolves 2,000 links).
CREATE OR REPLACE FUNCTION knowledge_resolve(ws uuid, key text) RETURNS SETOF uuid
LANGUAGE sql STABLE ROWS 1 AS $$
    (SELECT e.id FROM knowledge_entries e
     WHERE e.workspace_id = ws AND e.slug = key AND e.status <> 'ARCHIVED')
    UNION ALL
    (SELECT e.id FROM knowledge_entries e
     WHERE e.workspace_id = ws AND e.title_key = key AND e.status <> 'ARCHIVED'
     ORDER BY e.created_at, e.id
     LIMIT 1)
    LIMIT 1
$$;
