-- The embedding worker (src/knowledge/embeddings.rs) acts for no user: it
-- embeds every entry of the instance, whoever may read it. Like the agent
-- reaper with `agents_overview`, it works through narrow definer functions
-- (owned by the migration's owner, which bypasses RLS), not through a role
-- that bypasses the policies. They answer only a connection without a
-- scope (no user, no peer grant: a request always has one of them), so a
-- resolver that called one by mistake gets nothing. Requests read the
-- embeddings under the policies of migration 0060.

CREATE FUNCTION knowledge_unscoped() RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT current_user_id() IS NULL AND granted_workspace_ids() = '{}'
           AND coalesce(nullif(current_setting('mosaic.write_workspace_ids', true), ''), '{}') = '{}'
$$;

-- A saved title, content or status names its entry on
-- `mosaic_knowledge_saves`: delivered at commit only, to the worker's queue.
CREATE FUNCTION knowledge_entry_saved() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('mosaic_knowledge_saves', NEW.id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER knowledge_entries_saved AFTER INSERT OR UPDATE OF title, content, status ON knowledge_entries
    FOR EACH ROW EXECUTE FUNCTION knowledge_entry_saved();

-- The text an entry is embedded from: its title and the start of its
-- content (the model reads 256 tokens; 4,000 characters is more than that).
CREATE FUNCTION knowledge_embedding_text(title text, content text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT title || E'\n\n' || left(content, 4000) $$;

-- Entries (not archived) whose embedding by model `m` is missing or was
-- made from other text, with the text to embed and its SHA-256: among
-- `ids` when given (the queue), else all of them in id order after `after`
-- (the backfill's batches). At most `lim`.
CREATE FUNCTION knowledge_embedding_work(m text, ids uuid[], after uuid, lim integer)
RETURNS TABLE (entry_id uuid, body text, digest bytea)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT s.id, s.body, s.digest FROM (
        SELECT e.id, b.body, sha256(convert_to(b.body, 'UTF8')) AS digest
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

-- Stores an entry's vector and the digest of the text it was made from.
CREATE FUNCTION knowledge_embedding_put(entry uuid, m text, vec bytea, digest bytea) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    INSERT INTO knowledge_embeddings (entry_id, workspace_id, model, vector, content_sha256)
    SELECT e.id, e.workspace_id, m, vec, digest FROM knowledge_entries e WHERE e.id = entry AND knowledge_unscoped()
    ON CONFLICT (entry_id, model) DO UPDATE
        SET vector = EXCLUDED.vector, content_sha256 = EXCLUDED.content_sha256, updated_at = clock_timestamp()
$$;

-- The stored vectors of model `m` in id order after `after`, at most `lim`:
-- the in-memory index is loaded from these at start.
CREATE FUNCTION knowledge_embedding_vectors(m text, after uuid, lim integer)
RETURNS TABLE (entry_id uuid, vector bytea)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT k.entry_id, k.vector FROM knowledge_embeddings k
    WHERE knowledge_unscoped() AND k.model = m AND (after IS NULL OR k.entry_id > after)
    ORDER BY k.entry_id
    LIMIT lim
$$;

REVOKE ALL ON FUNCTION knowledge_embedding_work(text, uuid[], uuid, integer),
    knowledge_embedding_put(uuid, text, bytea, bytea),
    knowledge_embedding_vectors(text, uuid, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION knowledge_embedding_work(text, uuid[], uuid, integer),
    knowledge_embedding_put(uuid, text, bytea, bytea),
    knowledge_embedding_vectors(text, uuid, integer) TO mosaic_app;

-- Semantic search first asks which entries of a workspace the caller sees,
-- newest first: with the columns the policies test, the index answers
-- without reading the entries themselves (100,000 entries: see
-- benches/knowledge.rs).
CREATE INDEX knowledge_entries_ws_visible ON knowledge_entries (workspace_id, updated_at, id)
    INCLUDE (status, author_id);
