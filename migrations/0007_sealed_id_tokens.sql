-- Sessions now keep the provider's ID token sealed with MOSAIC_SECRET_KEY
-- (src/auth/oidc.rs): it carries the user's claims. Tokens stored in the
-- clear before this version are dropped; those sessions log out without
-- an id_token_hint.
UPDATE sessions SET id_token = NULL WHERE id_token IS NOT NULL;
COMMENT ON COLUMN sessions.id_token IS
    'the provider''s ID token, sealed (ChaCha20-Poly1305, bound to the user), as id_token_hint at logout';
