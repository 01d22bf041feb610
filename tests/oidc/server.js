// A real OpenID provider (the npm package `oidc-provider`) for Mosaic's SSO
// tests, shaped like Authentik: issuer http://127.0.0.1:PORT/application/o/SLUG/
// and Authentik's claims (sub, email, email_verified, preferred_username,
// name, groups). Login and consent complete without a form: the interaction
// route signs in the configured user and grants what the client asked for, so
// an HTTP client that follows redirects can finish the flow.
//
// Settings (environment): OIDC_PORT (required), OIDC_SLUG (mosaic),
// OIDC_CLIENT_ID, OIDC_CLIENT_SECRET, OIDC_REDIRECT_URI, OIDC_USER (JSON claims).
//
// Test controls (outside the issuer path, loopback only):
//   POST /__test/user      body: JSON claims     the user the next login signs in
//   POST /__test/rotate                          new signing key (old one still published)
//   POST /__test/logout-token   body: {"sub", "sid", "mode"} answers a logout token
//        signed with the provider's key (see logoutToken)
//   POST /__test/next-id-token  body: {"mode": M} the next token response carries a
//        bad ID token, M one of: expired, wrong_audience, wrong_issuer, unknown_key,
//        wrong_nonce, tampered (a claim changed after signing), alg_none (unsigned)
'use strict';

const http = require('node:http');
const crypto = require('node:crypto');
const { Provider } = require('oidc-provider');
const jose = require('jose');

const port = Number(process.env.OIDC_PORT || 0);
const slug = process.env.OIDC_SLUG || 'mosaic';
const prefix = `/application/o/${slug}`;
const issuer = `http://127.0.0.1:${port}${prefix}/`;
const clientId = process.env.OIDC_CLIENT_ID || 'mosaic';
const clientSecret = process.env.OIDC_CLIENT_SECRET || 'mosaic-test-secret';
const redirectUri = process.env.OIDC_REDIRECT_URI || 'http://127.0.0.1:8080/auth/callback';
const backchannelUri = redirectUri.replace(/\/auth\/callback$/, '/auth/backchannel-logout');

let user = JSON.parse(process.env.OIDC_USER || JSON.stringify({
  sub: 'user-1',
  email: 'alice@example.com',
  email_verified: true,
  preferred_username: 'alice',
  name: 'Alice',
  groups: ['staff'],
}));
let nextMode = null;
let keys = []; // private JWKs, newest first

async function newKey() {
  const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
  const jwk = await jose.exportJWK(privateKey);
  return { ...jwk, kid: crypto.randomUUID(), alg: 'RS256', use: 'sig' };
}

function buildProvider() {
  const provider = new Provider(issuer, {
    clients: [{
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      backchannel_logout_uri: backchannelUri,
      backchannel_logout_session_required: true,
    }],
    jwks: { keys },
    pkce: { required: () => true },
    // Its back-channel logout calls go to the instance on loopback, which the
    // provider's SSRF guard (special-use addresses) would refuse.
    fetch: (url, options) => {
      delete options.dispatcher;
      return fetch(url, options);
    },
    // Authentik puts the scope's claims in the ID token.
    conformIdTokenClaims: false,
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username', 'groups'],
    },
    features: {
      devInteractions: { enabled: false },
      rpInitiatedLogout: { enabled: true },
      backchannelLogout: { enabled: true },
    },
    interactions: { url: (ctx, interaction) => `${prefix}/interaction/${interaction.uid}` },
    findAccount: async (ctx, sub) => ({
      accountId: sub,
      claims: async () => ({ ...user, sub }),
    }),
    ttl: { Session: 3600, Grant: 3600, Interaction: 600, AuthorizationCode: 60, AccessToken: 600, IdToken: 600 },
    cookies: { keys: ['mosaic-test-cookie-key'] },
  });
  provider.on('backchannel.error', (ctx, err) => console.error(`back-channel logout failed: ${err.message} ${err.cause && err.cause.message}`));
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.path === '/token' && nextMode && ctx.body && ctx.body.id_token) {
      const mode = nextMode;
      nextMode = null;
      ctx.body = { ...ctx.body, id_token: await spoil(ctx.body.id_token, mode) };
    }
  });
  return provider;
}

// Re-signs the provider's ID token with one thing wrong.
async function spoil(idToken, mode) {
  const claims = jose.decodeJwt(idToken);
  const now = Math.floor(Date.now() / 1000);
  let key = keys[0];
  if (mode === 'expired') {
    claims.iat = now - 7200;
    claims.exp = now - 3600;
  } else if (mode === 'wrong_audience') {
    claims.aud = 'some-other-client';
  } else if (mode === 'wrong_nonce') {
    claims.nonce = 'not-the-nonce-mosaic-sent';
  } else if (mode === 'wrong_issuer') {
    claims.iss = `http://127.0.0.1:${port}/application/o/another-app/`;
  } else if (mode === 'unknown_key') {
    key = await newKey(); // never published
  } else if (mode === 'tampered') {
    // Signed as issued, then the e-mail is changed: the signature no longer matches.
    const [header, , signature] = idToken.split('.');
    const forged = { ...claims, email: 'mallory@example.com' };
    return [header, b64url(forged), signature].join('.');
  } else if (mode === 'alg_none') {
    return [b64url({ alg: 'none', typ: 'JWT' }), b64url(claims), ''].join('.');
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
  const signingKey = await jose.importJWK(key, 'RS256');
  return new jose.SignJWT(claims)
    .setProtectedHeader({ alg: 'RS256', kid: key.kid, typ: 'JWT' })
    .sign(signingKey);
}

function b64url(value) {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

// A back-channel logout token signed with the provider's current key, as
// the provider would send it, for the checks the real logout flow cannot
// produce: {sub, sid, mode}, mode one of valid, wrong_audience, stale,
// with_nonce, no_event, unknown_key.
async function logoutToken({ sub, sid, mode }) {
  const now = Math.floor(Date.now() / 1000);
  const claims = {
    iss: issuer, aud: clientId, iat: now, exp: now + 120, jti: crypto.randomUUID(),
    events: { 'http://schemas.openid.net/event/backchannel-logout': {} },
  };
  if (sub) claims.sub = sub;
  if (sid) claims.sid = sid;
  let key = keys[0];
  if (mode === 'wrong_audience') claims.aud = 'some-other-client';
  else if (mode === 'stale') { claims.iat = now - 3600; claims.exp = now - 3480; }
  else if (mode === 'with_nonce') claims.nonce = 'n';
  else if (mode === 'no_event') claims.events = {};
  else if (mode === 'unknown_key') key = await newKey();
  else if (mode !== 'valid') throw new Error(`unknown mode ${mode}`);
  const signingKey = await jose.importJWK(key, 'RS256');
  return new jose.SignJWT(claims)
    .setProtectedHeader({ alg: 'RS256', kid: key.kid, typ: 'logout+jwt' })
    .sign(signingKey);
}

let provider;

async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;
  if (prompt.name === 'login') {
    return provider.interactionFinished(req, res, { login: { accountId: user.sub } }, { mergeWithLastSubmission: false });
  }
  // consent: grant what was asked for
  let grant = details.grantId ? await provider.Grant.find(details.grantId) : undefined;
  if (!grant) {
    grant = new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  }
  if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
  if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
  if (prompt.details.missingResourceScopes) {
    for (const [indicator, scopes] of Object.entries(prompt.details.missingResourceScopes)) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
  }
  const grantId = await grant.save();
  return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    let data = '';
    req.on('data', (c) => { data += c; });
    req.on('end', () => resolve(data));
    req.on('error', reject);
  });
}

async function control(req, res) {
  const body = await readBody(req);
  const path = req.url;
  if (path === '/__test/user') {
    user = JSON.parse(body);
  } else if (path === '/__test/rotate') {
    keys = [await newKey(), keys[0]];
    provider = buildProvider();
  } else if (path === '/__test/next-id-token') {
    nextMode = JSON.parse(body).mode;
  } else if (path === '/__test/logout-token') {
    const token = await logoutToken(JSON.parse(body));
    res.writeHead(200, { 'content-type': 'text/plain' }).end(token);
    return;
  } else {
    res.writeHead(404).end('unknown control');
    return;
  }
  res.writeHead(204).end();
}

async function main() {
  if (!port) throw new Error('OIDC_PORT is required');
  keys = [await newKey()];
  provider = buildProvider();
  const server = http.createServer((req, res) => {
    const fail = (e) => {
      console.error(e);
      if (!res.headersSent) res.writeHead(500).end(String(e && e.message));
    };
    if (req.url.startsWith('/__test/') && req.method === 'POST') {
      control(req, res).catch(fail);
      return;
    }
    if (!(req.url === prefix || req.url.startsWith(`${prefix}/`))) {
      res.writeHead(404).end('not found');
      return;
    }
    req.originalUrl = req.url;
    req.url = req.url.slice(prefix.length) || '/';
    if (req.url.startsWith('/interaction/')) {
      interaction(req, res).catch(fail);
      return;
    }
    provider.callback()(req, res);
  });
  server.listen(port, '127.0.0.1', () => {
    console.log(`oidc-provider listening, issuer ${issuer}`);
  });
  const stop = () => server.close(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
