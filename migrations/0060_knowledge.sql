-- The knowledge base (issue 14): entries with wiki links, versions, tags and
-- embeddings, under the same Row-Level Security as the rest.
--
-- Visibility, all in the policies:
--   PUBLISHED  every reader of the workspace (members, granted peers);
--   ARCHIVED   the same readers (kept for history and old links; lists,
--              search and the graph leave it out unless asked for it);
--   DRAFT      its author only (a peer, having no user, sees no draft).
-- Versions, tags of an entry, links and embeddings are visible exactly when
-- their entry is: their policies ask the entries table, whose own policy
-- applies inside the subquery.
--
-- A link keeps the target as written; it is resolved when read, under the
-- reader's scope (by slug, then by title). So a link resolves by itself when
-- a matching entry appears, and never to an entry the reader cannot see.

-- Trusted since PostgreSQL 13: a database owner may create it.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE knowledge_entries (
    id           uuid PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES workspaces ON DELETE CASCADE,
    slug         text NOT NULL CHECK (slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$' AND length(slug) <= 120),
    title        text NOT NULL CHECK (length(btrim(title)) BETWEEN 1 AND 500),
    content      text NOT NULL,
    summary      text CHECK (length(summary) <= 2000),
    status       text NOT NULL CHECK (status IN ('DRAFT', 'PUBLISHED', 'ARCHIVED')),
    author_id    uuid REFERENCES users ON DELETE SET NULL,
    created_by   uuid REFERENCES users ON DELETE SET NULL,
    updated_by   uuid REFERENCES users ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Title above content. A tsvector holds at most 1 MB, so only the first
    -- 256 KiB of the content is indexed.
    search       tsvector GENERATED ALWAYS AS (
                     setweight(to_tsvector('english'::regconfig, title), 'A')
                     || setweight(to_tsvector('english'::regconfig, left(content, 262144)), 'B')
                 ) STORED,
    -- lower(title), stored: links resolve by it with plain equality, which
    -- (unlike a call of lower()) may use an index under the row policies.
    title_key    text GENERATED ALWAYS AS (lower(title)) STORED,
    UNIQUE (workspace_id, slug),
    UNIQUE (workspace_id, id)
);
CREATE INDEX knowledge_entries_search ON knowledge_entries USING gin (search);
CREATE INDEX knowledge_entries_title_trgm ON knowledge_entries USING gin (lower(title) gin_trgm_ops);
CREATE INDEX knowledge_entries_title ON knowledge_entries (workspace_id, title_key);
CREATE INDEX knowledge_entries_ws_updated ON knowledge_entries (workspace_id, updated_at, id);
CREATE TRIGGER knowledge_entries_touch BEFORE UPDATE ON knowledge_entries
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

CREATE TABLE knowledge_versions (
    id           uuid PRIMARY KEY,
    workspace_id uuid NOT NULL,
    entry_id     uuid NOT NULL,
    number       integer NOT NULL CHECK (number >= 1),
    title        text NOT NULL,
    content      text NOT NULL,
    message      text CHECK (length(message) <= 500),
    author_id    uuid REFERENCES users ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (entry_id, number),
    FOREIGN KEY (workspace_id, entry_id) REFERENCES knowledge_entries (workspace_id, id) ON DELETE CASCADE
);

CREATE TABLE knowledge_tags (
    id           uuid PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES workspaces ON DELETE CASCADE,
    name         text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 50 AND name = btrim(name)),
    created_by   uuid REFERENCES users ON DELETE SET NULL,
    -- Made by saving a draft and on no other entry yet: its name would tell
    -- of the draft, so only its creator sees it.
    draft_only   boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (workspace_id, id)
);
CREATE UNIQUE INDEX knowledge_tags_name ON knowledge_tags (workspace_id, lower(name));

CREATE TABLE knowledge_entry_tags (
    workspace_id uuid NOT NULL,
    entry_id     uuid NOT NULL,
    tag_id       uuid NOT NULL,
    PRIMARY KEY (entry_id, tag_id),
    FOREIGN KEY (workspace_id, entry_id) REFERENCES knowledge_entries (workspace_id, id) ON DELETE CASCADE,
    FOREIGN KEY (workspace_id, tag_id) REFERENCES knowledge_tags (workspace_id, id) ON DELETE CASCADE
);
CREATE INDEX knowledge_entry_tags_tag ON knowledge_entry_tags (tag_id);

-- One row per [[link]] in an entry's current content, in order.
CREATE TABLE knowledge_links (
    workspace_id uuid NOT NULL,
    source_id    uuid NOT NULL,
    position     integer NOT NULL CHECK (position >= 0),
    target       text NOT NULL CHECK (length(target) BETWEEN 1 AND 500),
    -- lower(target): compared with slugs and lower(title).
    target_key   text NOT NULL,
    label        text CHECK (length(label) <= 500),
    PRIMARY KEY (source_id, position),
    FOREIGN KEY (workspace_id, source_id) REFERENCES knowledge_entries (workspace_id, id) ON DELETE CASCADE
);
CREATE INDEX knowledge_links_target ON knowledge_links (workspace_id, target_key);

-- For semantic search (filled by the embedding queue).
CREATE TABLE knowledge_embeddings (
    entry_id       uuid NOT NULL,
    workspace_id   uuid NOT NULL,
    model          text NOT NULL,
    vector         bytea NOT NULL,
    content_sha256 bytea NOT NULL CHECK (length(content_sha256) = 32),
    updated_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (entry_id, model),
    FOREIGN KEY (workspace_id, entry_id) REFERENCES knowledge_entries (workspace_id, id) ON DELETE CASCADE
);

-- ---------------------------------------------------------------------------
-- Row-Level Security.
-- ---------------------------------------------------------------------------

ALTER TABLE knowledge_entries ENABLE ROW LEVEL SECURITY;
ALTER TABLE knowledge_entries FORCE ROW LEVEL SECURITY;
ALTER TABLE knowledge_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE knowledge_versions FORCE ROW LEVEL SECURITY;
ALTER TABLE knowledge_tags ENABLE ROW LEVEL SECURITY;
ALTER TABLE knowledge_tags FORCE ROW LEVEL SECURITY;
ALTER TABLE knowledge_entry_tags ENABLE ROW LEVEL SECURITY;
ALTER TABLE knowledge_entry_tags FORCE ROW LEVEL SECURITY;
ALTER TABLE knowledge_links ENABLE ROW LEVEL SECURITY;
ALTER TABLE knowledge_links FORCE ROW LEVEL SECURITY;
ALTER TABLE knowledge_embeddings ENABLE ROW LEVEL SECURITY;
ALTER TABLE knowledge_embeddings FORCE ROW LEVEL SECURITY;

-- The scope's functions are called in scalar subqueries, so each is
-- evaluated once per statement rather than once per row.
--
-- The draft rule: a draft is its author's alone.
CREATE POLICY knowledge_entries_read ON knowledge_entries FOR SELECT USING (
    workspace_id = ANY ((SELECT readable_workspace_ids())::uuid[])
    AND (status <> 'DRAFT' OR author_id = (SELECT current_user_id()))
);
CREATE POLICY knowledge_entries_insert ON knowledge_entries FOR INSERT WITH CHECK (
    workspace_id = ANY ((SELECT writable_workspace_ids())::uuid[])
    AND (status <> 'DRAFT' OR author_id = (SELECT current_user_id()))
);
CREATE POLICY knowledge_entries_update ON knowledge_entries FOR UPDATE
    USING (workspace_id = ANY ((SELECT writable_workspace_ids())::uuid[])
           AND (status <> 'DRAFT' OR author_id = (SELECT current_user_id())))
    WITH CHECK (workspace_id = ANY ((SELECT writable_workspace_ids())::uuid[])
           AND (status <> 'DRAFT' OR author_id = (SELECT current_user_id())));
-- No DELETE policy: deleting an entry archives it.

-- What hangs off an entry is visible, and writable, with its entry.
CREATE POLICY knowledge_versions_read ON knowledge_versions FOR SELECT USING (
    EXISTS (SELECT 1 FROM knowledge_entries e WHERE e.id = entry_id)
);
CREATE POLICY knowledge_versions_insert ON knowledge_versions FOR INSERT WITH CHECK (
    workspace_id = ANY ((SELECT writable_workspace_ids())::uuid[])
    AND EXISTS (SELECT 1 FROM knowledge_entries e WHERE e.id = entry_id)
);

-- A tag's visibility; its writes are separate policies, as a FOR ALL policy
-- would also let every writer read every tag.
CREATE POLICY knowledge_tags_read ON knowledge_tags FOR SELECT USING (
    workspace_id = ANY ((SELECT readable_workspace_ids())::uuid[])
    AND (NOT draft_only OR created_by = (SELECT current_user_id())
         OR EXISTS (SELECT 1 FROM knowledge_entry_tags et WHERE et.tag_id = knowledge_tags.id))
);
CREATE POLICY knowledge_tags_insert ON knowledge_tags FOR INSERT
    WITH CHECK (workspace_id = ANY ((SELECT writable_workspace_ids())::uuid[]));
CREATE POLICY knowledge_tags_update ON knowledge_tags FOR UPDATE
    USING (workspace_id = ANY ((SELECT writable_workspace_ids())::uuid[]))
    WITH CHECK (workspace_id = ANY ((SELECT writable_workspace_ids())::uuid[]));
CREATE POLICY knowledge_tags_delete ON knowledge_tags FOR DELETE
    USING (workspace_id = ANY ((SELECT writable_workspace_ids())::uuid[]));

CREATE POLICY knowledge_entry_tags_read ON knowledge_entry_tags FOR SELECT USING (
    EXISTS (SELECT 1 FROM knowledge_entries e WHERE e.id = entry_id)
);
CREATE POLICY knowledge_entry_tags_write ON knowledge_entry_tags FOR ALL
    USING (workspace_id = ANY ((SELECT writable_workspace_ids())::uuid[])
           AND EXISTS (SELECT 1 FROM knowledge_entries e WHERE e.id = entry_id))
    WITH CHECK (workspace_id = ANY ((SELECT writable_workspace_ids())::uuid[])
           AND EXISTS (SELECT 1 FROM knowledge_entries e WHERE e.id = entry_id));

CREATE POLICY knowledge_links_read ON knowledge_links FOR SELECT USING (
    EXISTS (SELECT 1 FROM knowledge_entries e WHERE e.id = source_id)
);
CREATE POLICY knowledge_links_write ON knowledge_links FOR ALL
    USING (workspace_id = ANY ((SELECT writable_workspace_ids())::uuid[])
           AND EXISTS (SELECT 1 FROM knowledge_entries e WHERE e.id = source_id))
    WITH CHECK (workspace_id = ANY ((SELECT writable_workspace_ids())::uuid[])
           AND EXISTS (SELECT 1 FROM knowledge_entries e WHERE e.id = source_id));

CREATE POLICY knowledge_embeddings_read ON knowledge_embeddings FOR SELECT USING (
    EXISTS (SELECT 1 FROM knowledge_entries e WHERE e.id = entry_id)
);
CREATE POLICY knowledge_embeddings_write ON knowledge_embeddings FOR ALL
    USING (workspace_id = ANY ((SELECT writable_workspace_ids())::uuid[])
           AND EXISTS (SELECT 1 FROM knowledge_entries e WHERE e.id = entry_id))
    WITH CHECK (workspace_id = ANY ((SELECT writable_workspace_ids())::uuid[])
           AND EXISTS (SELECT 1 FROM knowledge_entries e WHERE e.id = entry_id));

GRANT SELECT, INSERT, UPDATE ON knowledge_entries TO mosaic_app;
GRANT SELECT, INSERT ON knowledge_versions TO mosaic_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON knowledge_tags, knowledge_entry_tags, knowledge_links,
    knowledge_embeddings TO mosaic_app;

-- The entry a link's key names, as the caller sees it: by slug first, then
-- by title (the oldest such entry); archived entries are not link targets.
-- SECURITY INVOKER, so the policies above decide what it may find; a set
-- (of at most one), so PostgreSQL inlines it into the query that uses it
-- (`FROM knowledge_resolve(…)`) and plans it once, with the indexes.
CREATE FUNCTION knowledge_resolve(ws uuid, key text) RETURNS SETOF uuid
LANGUAGE sql STABLE ROWS 1 AS $$
    SELECT e.id FROM knowledge_entries e
    WHERE e.workspace_id = ws AND e.status <> 'ARCHIVED' AND (e.slug = key OR e.title_key = key)
    ORDER BY e.slug = key DESC, e.created_at, e.id
    LIMIT 1
$$;
GRANT EXECUTE ON FUNCTION knowledge_resolve(uuid, text) TO mosaic_app;

-- The ids of these tag names in a workspace the caller may write to,
-- creating the missing ones. A definer, because a name may already exist
-- hidden (draft_only, someone else's): it is reused, never duplicated, and
-- no longer hidden once a non-draft entry carries it. Only ids come back.
CREATE FUNCTION knowledge_tag_ids(ws uuid, names text[], for_draft boolean) RETURNS uuid[]
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE ids uuid[];
BEGIN
    IF NOT ws = ANY (writable_workspace_ids()) THEN
        RAISE EXCEPTION 'not allowed to change tags in this workspace' USING ERRCODE = '42501';
    END IF;
    INSERT INTO knowledge_tags (id, workspace_id, name, created_by, draft_only)
    SELECT gen_random_uuid(), ws, n, current_user_id(), for_draft FROM unnest(names) AS u(n)
    ON CONFLICT (workspace_id, lower(name))
        DO UPDATE SET draft_only = knowledge_tags.draft_only AND EXCLUDED.draft_only;
    SELECT coalesce(array_agg(t.id), '{}') INTO ids FROM knowledge_tags t
    WHERE t.workspace_id = ws AND lower(t.name) IN (SELECT lower(n) FROM unnest(names) AS u(n));
    RETURN ids;
END $$;
REVOKE ALL ON FUNCTION knowledge_tag_ids(uuid, text[], boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION knowledge_tag_ids(uuid, text[], boolean) TO mosaic_app;

-- Full-text and title-similarity candidates for search. Under row policies
-- PostgreSQL may not use an index for an operator that is not leakproof (as
-- @@ and <% are not), so each search would read the whole table. These
-- definers find candidates by the indexes, and only ever among what the
-- policies would show the caller (readable workspaces; drafts only the
-- caller's): the search query then reads the candidates under the policies
-- themselves, which stay what decides, and ranks only those. At most `lim`
-- candidates (in index order): ranking reads every candidate's tsvector,
-- so a word in most entries would otherwise cost a read of them all.
CREATE FUNCTION knowledge_text_candidates(ws uuid[], q tsquery, lim integer) RETURNS SETOF uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT e.id FROM knowledge_entries e
    WHERE e.search @@ q
      AND e.workspace_id = ANY (readable_workspace_ids()) AND (ws IS NULL OR e.workspace_id = ANY (ws))
      AND (e.status <> 'DRAFT' OR e.author_id = current_user_id())
    LIMIT lim
$$;
CREATE FUNCTION knowledge_title_candidates(ws uuid[], words text, lim integer) RETURNS SETOF uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT e.id FROM knowledge_entries e
    WHERE words <% lower(e.title)
      AND e.workspace_id = ANY (readable_workspace_ids()) AND (ws IS NULL OR e.workspace_id = ANY (ws))
      AND (e.status <> 'DRAFT' OR e.author_id = current_user_id())
    LIMIT lim
$$;
REVOKE ALL ON FUNCTION knowledge_text_candidates(uuid[], tsquery, integer), knowledge_title_candidates(uuid[], text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION knowledge_text_candidates(uuid[], tsquery, integer), knowledge_title_candidates(uuid[], text, integer) TO mosaic_app;
