-- Workspace memberships granted by identity-provider groups
-- (`oidc.group_roles` entries `group=workspace:<id>:<ROLE>`) follow the
-- groups: at every sign-on the user gets the strongest role their groups map
-- to in each workspace, and loses what a group they left had given.
-- Memberships given by hand are never touched; a role changed by hand makes
-- the membership a hand-given one.

ALTER TABLE workspace_members ADD COLUMN granted_by_group text;

CREATE FUNCTION membership_by_hand() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.role <> OLD.role THEN
        NEW.granted_by_group := NULL;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER workspace_members_by_hand BEFORE UPDATE OF role ON workspace_members
    FOR EACH ROW EXECUTE FUNCTION membership_by_hand();

CREATE FUNCTION role_rank(role text) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE role WHEN 'OWNER' THEN 4 WHEN 'ADMIN' THEN 3 WHEN 'MEMBER' THEN 2 ELSE 1 END
$$;

-- The strongest role the mapped groups give in each existing workspace, and
-- the group giving it.
CREATE FUNCTION group_roles_wanted(ws_ids uuid[], ws_roles text[], ws_groups text[])
RETURNS TABLE (ws uuid, role text, grp text)
LANGUAGE sql STABLE SET search_path = pg_catalog, public AS $$
    SELECT DISTINCT ON (m.ws) m.ws, m.role, m.grp
    FROM unnest(ws_ids, ws_roles, ws_groups) AS m(ws, role, grp)
    JOIN workspaces w ON w.id = m.ws
    ORDER BY m.ws, role_rank(m.role) DESC, m.grp
$$;

-- As in 0005, with the group behind each mapped role (ws_groups), and the
-- memberships synchronised with them.
DROP FUNCTION sso_upsert_user(text, text, text, boolean, text, text, text[], boolean, uuid[], text[]);
CREATE FUNCTION sso_upsert_user(
    iss text, sub text, addr text, verified boolean, display_name text, username text,
    member_of text[], admin boolean, ws_ids uuid[], ws_roles text[], ws_groups text[]
) RETURNS TABLE (linked_user uuid, created boolean)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    uid uuid;
    fresh boolean := false;
BEGIN
    SELECT i.user_id INTO uid FROM user_identities i WHERE i.issuer = iss AND i.subject = sub;
    IF uid IS NULL THEN
        SELECT u.id INTO uid FROM users u WHERE u.email = lower(addr);
        IF uid IS NOT NULL AND NOT verified THEN
            RAISE EXCEPTION 'a local user has this e-mail and the provider has not verified it'
                USING ERRCODE = 'MOS41';
        END IF;
        IF uid IS NULL THEN
            uid := gen_random_uuid();
            fresh := true;
            INSERT INTO users (id, email, name, is_admin, email_verified)
            VALUES (uid, lower(addr), display_name, coalesce(admin, false), verified);
        END IF;
        INSERT INTO user_identities (issuer, subject, user_id) VALUES (iss, sub, uid);
    END IF;
    IF EXISTS (SELECT 1 FROM users u WHERE u.id = uid AND u.deactivated_at IS NOT NULL) THEN
        RAISE EXCEPTION 'this account is deactivated' USING ERRCODE = 'MOS42';
    END IF;
    UPDATE users SET email = lower(addr), name = display_name, email_verified = verified,
                     is_admin = coalesce(admin, is_admin), updated_at = now()
    WHERE id = uid;
    UPDATE user_identities SET preferred_username = username, groups = coalesce(member_of, '{}'),
                               email_verified = verified, last_login_at = now()
    WHERE issuer = iss AND subject = sub;

    -- Group-given memberships no group gives any more (or gives otherwise)
    -- go, unless that would leave a workspace without an owner.
    DELETE FROM workspace_members wm
    WHERE wm.user_id = uid AND wm.granted_by_group IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM group_roles_wanted(ws_ids, ws_roles, ws_groups) t
                      WHERE t.ws = wm.workspace_id AND t.role = wm.role AND t.grp = wm.granted_by_group)
      AND (wm.role <> 'OWNER' OR EXISTS (SELECT 1 FROM workspace_members o
                                         WHERE o.workspace_id = wm.workspace_id AND o.role = 'OWNER'
                                           AND o.user_id <> uid));
    INSERT INTO workspace_members (workspace_id, user_id, role, granted_by_group)
    SELECT t.ws, uid, t.role, t.grp FROM group_roles_wanted(ws_ids, ws_roles, ws_groups) t
    ON CONFLICT DO NOTHING;
    RETURN QUERY SELECT uid, fresh;
END $$;

REVOKE ALL ON FUNCTION sso_upsert_user(text, text, text, boolean, text, text, text[], boolean, uuid[], text[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sso_upsert_user(text, text, text, boolean, text, text, text[], boolean, uuid[], text[], text[]) TO mosaic_app;
REVOKE ALL ON FUNCTION group_roles_wanted(uuid[], text[], text[]) FROM PUBLIC;
