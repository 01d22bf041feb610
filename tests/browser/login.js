// Drives headless Chromium (the Debian package, through puppeteer-core)
// through sign-in to the GraphQL IDE, for tests/browser.rs:
//
//   node tests/browser/login.js <base URL of the instance> <issuer URL of the provider>
//
// 1. /graphql signed out: the IDE offers "Sign in" (#mosaic-signin) and a run
//    of the default query is refused (401 UNAUTHENTICATED, no user data).
// 2. Clicks "Sign in": /auth/login -> the provider (tests/oidc/server.js signs
//    the configured user in by itself) -> /auth/callback -> /graphql.
// 3. The IDE shows "signed in as alice@example.com"; running the default query
//    returns her address (the fetcher sent the session cookie and x-mosaic-csrf).
// 4. Clicks "Sign out" (#mosaic-signout): lands on <issuer>session/end.
// 5. Back on /graphql: "Sign in" again, and GET /auth/session answers 401.
//
// Prints one JSON line of observations on stdout and exits 0, or prints the
// failed step, its reason and what was observed so far on stderr and exits 1.
// Every wait is bounded (STEP_TIMEOUT_MS each, DEADLINE_MS for everything).
// Settings (environment): PUPPETEER_EXECUTABLE_PATH (/usr/bin/chromium),
// BROWSER_STEP_TIMEOUT_MS (15000), BROWSER_DEADLINE_MS (50000).
'use strict';

const puppeteer = require('puppeteer-core');

const EMAIL = 'alice@example.com';
const STEP_TIMEOUT_MS = Number(process.env.BROWSER_STEP_TIMEOUT_MS || 15000);
const DEADLINE_MS = Number(process.env.BROWSER_DEADLINE_MS || 50000);
const executablePath = process.env.PUPPETEER_EXECUTABLE_PATH || '/usr/bin/chromium';

// GraphiQL 4 (ide/node_modules/graphiql): the run button and the two editors.
const EXECUTE = '.graphiql-execute-button';
const QUERY_EDITOR = '.graphiql-query-editor .CodeMirror';
const RESPONSE = '.graphiql-response';

const observed = { pageErrors: [], cspViolations: [], consoleErrors: [], failedRequests: [], externalRequests: [] };
let step = 'start';
let browser = null;
let page = null;

class Failure extends Error {}

function check(condition, message) {
  if (!condition) throw new Failure(message);
}

async function fail(error) {
  let where = '';
  try {
    if (page) {
      const text = await page.evaluate(() => (document.body ? document.body.innerText : '')).catch(() => '');
      where = `\npage: ${page.url()}\npage text: ${String(text).slice(0, 1500)}`;
    }
  } catch (_) { /* the page is gone */ }
  const reason = error instanceof Failure ? error.message : (error && error.stack) || String(error);
  process.stderr.write(`login.js: FAILED at step "${step}": ${reason}${where}\n`);
  process.stderr.write(`login.js: observed so far: ${JSON.stringify(observed)}\n`);
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
}

// The whole text of a CodeMirror 5 editor (not only its rendered lines).
function editorText(selector) {
  return page.evaluate((sel) => {
    const el = document.querySelector(sel);
    if (!el) return null;
    return el.CodeMirror ? el.CodeMirror.getValue() : el.innerText;
  }, selector);
}

// Waits for the default query in the editor, clicks GraphiQL's run button and
// returns the response to that POST /graphql (not to the schema's introspection).
async function runDefaultQuery(base) {
  await page.waitForSelector(EXECUTE, { visible: true, timeout: STEP_TIMEOUT_MS });
  await page.waitForFunction(
    (sel) => {
      const el = document.querySelector(sel);
      return !!(el && el.CodeMirror && /\bme\s*\{/.test(el.CodeMirror.getValue()));
    },
    { timeout: STEP_TIMEOUT_MS },
    QUERY_EDITOR,
  );
  const answered = page.waitForResponse(
    (r) => r.url() === `${base}/graphql` && r.request().method() === 'POST'
      && /\bme\s*\{/.test(r.request().postData() || '') && !/__schema/.test(r.request().postData() || ''),
    { timeout: STEP_TIMEOUT_MS },
  );
  await page.click(EXECUTE);
  const response = await answered;
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  return { response, status: response.status(), body, headers: response.request().headers() };
}

async function waitForResponsePane(needle) {
  await page.waitForFunction(
    (sel, n) => {
      const el = document.querySelector(`${sel} .CodeMirror`);
      const text = el && el.CodeMirror ? el.CodeMirror.getValue() : '';
      return text.includes(n);
    },
    { timeout: STEP_TIMEOUT_MS },
    RESPONSE,
    needle,
  );
  return editorText(`${RESPONSE} .CodeMirror`);
}

async function sessionStatus() {
  return page.evaluate(() => fetch('/auth/session', { credentials: 'same-origin', headers: { Accept: 'application/json' } })
    .then((r) => r.status));
}

async function main() {
  const [base, issuer] = process.argv.slice(2).map((a) => a && a.replace(/\/+$/, ''));
  check(base && issuer, 'usage: node login.js <instance base URL> <issuer URL>');
  const issuerSlash = `${issuer}/`;
  setTimeout(() => fail(new Failure(`not finished within ${DEADLINE_MS} ms`)), DEADLINE_MS).unref();

  step = 'launch chromium';
  browser = await puppeteer.launch({
    executablePath,
    headless: true,
    pipe: true, // Chromium exits with this process, even if it is killed
    args: [
      '--no-sandbox', // we run as root
      '--no-proxy-server',
      // Loopback only: no name is resolved, so nothing leaves this machine.
      '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
      '--no-first-run',
      '--no-default-browser-check',
    ],
    timeout: STEP_TIMEOUT_MS,
  });
  observed.browser = await browser.version();
  page = await browser.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  page.setDefaultNavigationTimeout(STEP_TIMEOUT_MS);
  page.on('pageerror', (e) => observed.pageErrors.push(`${page.url()}: ${e.message}`));
  page.on('console', (m) => {
    if (/Content[- ]Security[- ]Policy/i.test(m.text())) observed.cspViolations.push(m.text());
    else if (m.type() === 'error') observed.consoleErrors.push(`${(m.location() && m.location().url) || page.url()}: ${m.text()}`);
  });
  page.on('request', (r) => {
    if (new URL(r.url()).hostname !== '127.0.0.1' && !r.url().startsWith('data:')) {
      observed.externalRequests.push({ url: r.url(), from: r.frame() ? r.frame().url() : null });
    }
  });
  page.on('requestfailed', (r) => observed.failedRequests.push(`${r.url()}: ${r.failure() && r.failure().errorText}`));

  step = 'open /graphql signed out';
  const first = await page.goto(`${base}/graphql`, { waitUntil: 'load' });
  check(first && first.status() === 200, `GET /graphql answered ${first && first.status()}`);
  await page.waitForSelector('#mosaic-signin', { visible: true });
  observed.signedOut = {
    signinHref: await page.$eval('#mosaic-signin', (a) => a.getAttribute('href')),
    signoutShown: (await page.$('#mosaic-signout')) !== null,
    status: await page.$eval('#mosaic-status', (s) => s.textContent),
  };
  check(!observed.signedOut.signoutShown, 'a "Sign out" button is shown while signed out');

  step = 'run the default query signed out';
  const refused = await runDefaultQuery(base);
  observed.signedOut.query = {
    status: refused.status,
    code: refused.body && refused.body.errors && refused.body.errors[0].extensions
      ? refused.body.errors[0].extensions.code : null,
    csrfHeaderSent: 'x-mosaic-csrf' in refused.headers,
  };
  check(refused.status === 401, `signed out, the query answered HTTP ${refused.status}, not 401: ${JSON.stringify(refused.body)}`);
  const refusedPane = await waitForResponsePane('UNAUTHENTICATED');
  observed.signedOut.query.paneHasEmail = refusedPane.includes(EMAIL);
  check(!refusedPane.includes(EMAIL), `signed out, the result pane shows ${EMAIL}`);

  step = 'sign in (click #mosaic-signin)';
  const [landed] = await Promise.all([
    page.waitForNavigation({ waitUntil: 'load' }),
    page.click('#mosaic-signin'),
  ]);
  check(landed, 'clicking "Sign in" started no navigation');
  observed.login = {
    redirects: landed.request().redirectChain().map((r) => r.url()),
    landedOn: page.url(),
    landedStatus: landed.status(),
  };
  const chain = observed.login.redirects;
  check(chain.length > 0 && chain[0].startsWith(`${base}/auth/login`), `the flow did not start at ${base}/auth/login: ${chain}`);
  check(chain.some((u) => u.startsWith(`${issuerSlash}auth`)), `the flow never reached the provider's authorization endpoint: ${chain}`);
  check(chain.some((u) => u.startsWith(`${base}/auth/callback?`)), `the flow never came back to /auth/callback: ${chain}`);
  check(page.url() === `${base}/graphql`, `the flow ended on ${page.url()}, not ${base}/graphql`);
  check(landed.status() === 200, `/graphql answered ${landed.status()} after the sign-in`);

  step = 'the IDE shows the session';
  await page.waitForFunction(
    (email) => {
      const box = document.getElementById('mosaic-session');
      return !!(box && box.textContent.includes(`signed in as ${email}`) && document.getElementById('mosaic-signout'));
    },
    {},
    EMAIL,
  );
  observed.signedIn = {
    sessionText: (await page.$eval('#mosaic-session', (b) => b.textContent)).trim(),
    status: await page.$eval('#mosaic-status', (s) => s.textContent),
    signinShown: (await page.$('#mosaic-signin')) !== null,
    // The session cookie is HttpOnly, the CSRF one readable by the page.
    documentCookies: await page.evaluate(() => document.cookie.split(';').map((c) => c.trim().split('=')[0]).filter(Boolean)),
  };
  check(!observed.signedIn.signinShown, 'the "Sign in" link is still shown while signed in');

  step = 'run the default query signed in';
  const answered = await runDefaultQuery(base);
  observed.signedIn.query = {
    status: answered.status,
    email: answered.body && answered.body.data && answered.body.data.me ? answered.body.data.me.email : null,
    errors: answered.body && answered.body.errors ? answered.body.errors : null,
    csrfHeaderSent: typeof answered.headers['x-mosaic-csrf'] === 'string' && answered.headers['x-mosaic-csrf'].length > 0,
    authorizationSent: 'authorization' in answered.headers,
  };
  check(answered.status === 200, `signed in, the query answered HTTP ${answered.status}: ${JSON.stringify(answered.body)}`);
  check(observed.signedIn.query.email === EMAIL, `signed in, me.email is ${observed.signedIn.query.email}`);
  // What the person sees: the result pane shows the address.
  const pane = await waitForResponsePane(EMAIL);
  observed.signedIn.query.paneHasEmail = pane.includes(EMAIL);

  step = 'sign out (click #mosaic-signout)';
  const logoutAnswered = page.waitForResponse(
    (r) => r.url() === `${base}/auth/logout` && r.request().method() === 'POST',
  );
  const [ended] = await Promise.all([
    page.waitForNavigation({ waitUntil: 'load' }),
    page.click('#mosaic-signout'),
  ]);
  const logout = await logoutAnswered;
  observed.logout = {
    status: logout.status(),
    // Its body ({"redirect": url}) is gone once the page has navigated away.
    contentType: logout.headers()['content-type'] || null,
    landedOn: page.url(),
    // The page went there itself (location.assign), not through an HTTP redirect.
    landedThroughRedirects: ended ? ended.request().redirectChain().length : null,
    landedStatus: ended ? ended.status() : null,
    heading: await page.evaluate(() => {
      const h = document.querySelector('h1');
      return h ? h.textContent.trim() : null;
    }),
  };
  check(logout.status() === 200, `POST /auth/logout answered ${logout.status()}`);
  check(page.url().startsWith(`${issuerSlash}session/end`), `after "Sign out" the browser is on ${page.url()}, not ${issuerSlash}session/end`);

  step = 'back on /graphql signed out';
  const again = await page.goto(`${base}/graphql`, { waitUntil: 'load' });
  check(again && again.status() === 200, `GET /graphql answered ${again && again.status()}`);
  await page.waitForSelector('#mosaic-signin', { visible: true });
  const cdp = await page.createCDPSession();
  const { cookies } = await cdp.send('Network.getCookies', { urls: [base] });
  observed.afterLogout = {
    sessionStatus: await sessionStatus(),
    signoutShown: (await page.$('#mosaic-signout')) !== null,
    cookies: cookies.map((c) => c.name).filter((n) => n.startsWith('mosaic_')),
  };
  check(observed.afterLogout.sessionStatus === 401, `GET /auth/session answered ${observed.afterLogout.sessionStatus} after sign-out`);

  step = 'close';
  await browser.close();
  browser = null;
  process.stdout.write(`${JSON.stringify(observed)}\n`);
}

main().catch(fail);
