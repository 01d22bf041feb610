-- Workspace invitations (issue 10, item 12). Adding a member by e-mail used
-- to look the address up (telling whether an account had it) and add the
-- person at once. Now an admin invites an address; nothing about accounts is
-- revealed, and the person becomes a member only by accepting. An invitation
-- to an address without an account waits for someone to sign in with it.

CREATE TABLE workspace_invitations (
    id           uuid PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES workspaces ON DELETE CASCADE,
    email        text NOT NULL CHECK (email = lower(email) AND length(email) BETWEEN 3 AND 254),
    role         text NOT NULL CHECK (role IN ('OWNER', 'ADMIN', 'MEMBER', 'GUEST')),
    invited_by   uuid REFERENCES users ON DELETE SET NULL,
    status       text NOT NULL DEFAULT 'PENDING'
                 CHECK (status IN ('PENDING', 'ACCEPTED', 'DECLINED', 'REVOKED', 'EXPIRED')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL DEFAULT now() + interval '14 days',
    answered_at  timestamptz
);
CREATE UNIQUE INDEX workspace_invitations_one_pending ON workspace_invitations (workspace_id, email)
    WHERE status = 'PENDING';
CREATE INDEX workspace_invitations_invitee ON workspace_invitations (email) WHERE status = 'PENDING';
CREATE INDEX workspace_invitations_by_time ON workspace_invitations (workspace_id, created_at);

ALTER TABLE workspace_invitations ENABLE ROW LEVEL SECURITY;
ALTER TABLE workspace_invitations FORCE ROW LEVEL SECURITY;

-- Admins of the workspace see its invitations, invite (only owners invite
-- owners), and revoke or expire pending ones. Invitees go through the
-- definer functions below, which see only invitations to their own address.
CREATE POLICY invitations_read ON workspace_invitations FOR SELECT
    USING (workspace_id = ANY (admin_workspace_ids()));
CREATE POLICY invitations_invite ON workspace_invitations FOR INSERT WITH CHECK (
    workspace_id = ANY (admin_workspace_ids())
    AND invited_by = current_user_id() AND status = 'PENDING'
    AND (role <> 'OWNER' OR is_workspace_owner(workspace_id, current_user_id()))
);
CREATE POLICY invitations_withdraw ON workspace_invitations FOR UPDATE
    USING (workspace_id = ANY (admin_workspace_ids()) AND status = 'PENDING'
           AND (role <> 'OWNER' OR is_workspace_owner(workspace_id, current_user_id())))
    WITH CHECK (workspace_id = ANY (admin_workspace_ids()) AND status IN ('REVOKED', 'EXPIRED'));

GRANT SELECT, INSERT, UPDATE ON workspace_invitations TO mosaic_app;

-- The pending, unexpired invitations to the caller's own address (only if
-- the identity provider verified that the address is theirs).
CREATE FUNCTION my_invitations()
RETURNS TABLE (id uuid, workspace_id uuid, workspace_name text, email text, role text, status text,
               created_at timestamptz, expires_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT i.id, i.workspace_id, w.name, i.email, i.role, i.status, i.created_at, i.expires_at
    FROM workspace_invitations i
    JOIN workspaces w ON w.id = i.workspace_id
    JOIN users u ON u.id = current_user_id() AND u.email_verified AND u.email = i.email
    WHERE i.status = 'PENDING' AND i.expires_at > now()
    ORDER BY i.created_at, i.id
$$;

-- Accepts (the caller becomes a member with the invited role; one who
-- already is keeps their role) or declines one of those invitations.
-- Returns the workspace, or NULL when there is no such invitation for the caller.
CREATE FUNCTION invitation_answer(invitation uuid, accept boolean) RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    ws uuid;
    invited_role text;
BEGIN
    SELECT i.workspace_id, i.role INTO ws, invited_role
    FROM workspace_invitations i
    JOIN users u ON u.id = current_user_id() AND u.email_verified AND u.email = i.email
    WHERE i.id = invitation AND i.status = 'PENDING' AND i.expires_at > now()
    FOR UPDATE OF i;
    IF ws IS NULL THEN
        RETURN NULL;
    END IF;
    UPDATE workspace_invitations
    SET status = CASE WHEN accept THEN 'ACCEPTED' ELSE 'DECLINED' END, answered_at = now()
    WHERE id = invitation;
    IF accept THEN
        INSERT INTO workspace_members (workspace_id, user_id, role)
        VALUES (ws, current_user_id(), invited_role)
        ON CONFLICT (workspace_id, user_id) DO NOTHING;
    END IF;
    RETURN ws;
END $$;

REVOKE ALL ON FUNCTION my_invitations() FROM PUBLIC;
REVOKE ALL ON FUNCTION invitation_answer(uuid, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION my_invitations() TO mosaic_app;
GRANT EXECUTE ON FUNCTION invitation_answer(uuid, boolean) TO mosaic_app;

-- Looking people up by address (an account oracle) is what invitations replace.
DROP FUNCTION user_id_by_email(text);
