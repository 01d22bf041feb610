-- A peer's new name or base URL, announced in a CONNECT after an admin
-- approved the peering, waits here until an admin approves it (approvePeer).
ALTER TABLE peers
    ADD COLUMN pending_name     text CHECK (char_length(pending_name) <= 100),
    ADD COLUMN pending_base_url text CHECK (length(pending_base_url) <= 2048);

-- Admins delete pending, rejected and revoked peers (deletePeer).
GRANT DELETE ON peers TO mosaic_app;
