-- Whether a peer's requests may reach this instance's own peers (reads only;
-- writes are never forwarded on a peer's behalf). Off unless granted.
ALTER TABLE peers ADD COLUMN grant_forward boolean NOT NULL DEFAULT false;

-- A name selects a peer in `scope: {instances: [...]}`: among the peers we
-- query it is unique, so nobody can make a name ambiguous.
CREATE UNIQUE INDEX peers_active_name ON peers (name) WHERE outbound_state = 'active';
