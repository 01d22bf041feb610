// Drives headless Chromium (puppeteer-core) through the GraphQL IDE of an
// instance without single sign-on, for tests/browser.rs:
//
//   node tests/browser/docs.js <base URL of the instance> <API token>
//
// 1. /graphql: no "Sign in" (#mosaic-signin) but the hint where a token comes
//    from (#mosaic-token-hint).
// 2. Pastes the token and submits: GraphiQL sends its introspection query
//    (POST /graphql with __schema), which must answer 200 with the schema.
// 3. Opens the docs pane (the sidebar's Documentation Explorer button),
//    follows the root query type and reads the fields it lists.
//
// Prints one JSON line of observations on stdout and exits 0, or prints the
// failed step and what was observed on stderr and exits 1. Every wait is
// bounded (STEP_TIMEOUT_MS each, DEADLINE_MS for everything).
'use strict';

const puppeteer = require('puppeteer-core');

const STEP_TIMEOUT_MS = Number(process.env.BROWSER_STEP_TIMEOUT_MS || 15000);
const DEADLINE_MS = Number(process.env.BROWSER_DEADLINE_MS || 50000);
const executablePath = process.env.PUPPETEER_EXECUTABLE_PATH || '/usr/bin/chromium';

const observed = { pageErrors: [], cspViolations: [] };
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
      const docs = await page.evaluate(() => {
        const el = document.querySelector('.graphiql-doc-explorer');
        return el ? el.outerHTML : '(no docs pane)';
      }).catch(() => '');
      where = `\npage: ${page.url()}\npage text: ${String(text).slice(0, 1500)}\ndocs pane: ${String(docs).slice(0, 1500)}`;
    }
  } catch (_) { /* the page is gone */ }
  const reason = error instanceof Failure ? error.message : (error && error.stack) || String(error);
  process.stderr.write(`docs.js: FAILED at step "${step}": ${reason}${where}\n`);
  process.stderr.write(`docs.js: observed so far: ${JSON.stringify(observed)}\n`);
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
}

async function main() {
  const [base, token] = process.argv.slice(2);
  check(base && token, 'usage: node docs.js <instance base URL> <API token>');
  setTimeout(() => fail(new Failure(`not finished within ${DEADLINE_MS} ms`)), DEADLINE_MS).unref();

  step = 'launch chromium';
  browser = await puppeteer.launch({
    executablePath,
    headless: true,
    pipe: true,
    args: [
      '--no-sandbox',
      '--no-proxy-server',
      '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
      '--no-first-run',
      '--no-default-browser-check',
    ],
    timeout: STEP_TIMEOUT_MS,
  });
  page = await browser.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  page.setDefaultNavigationTimeout(STEP_TIMEOUT_MS);
  page.on('pageerror', (e) => observed.pageErrors.push(e.message));
  page.on('console', (m) => {
    if (/Content[- ]Security[- ]Policy/i.test(m.text())) observed.cspViolations.push(m.text());
  });

  step = 'open /graphql';
  const first = await page.goto(`${base}/graphql`, { waitUntil: 'load' });
  check(first && first.status() === 200, `GET /graphql answered ${first && first.status()}`);
  await page.waitForSelector('#mosaic-token-hint', { visible: true });
  observed.signinShown = (await page.$('#mosaic-signin')) !== null;
  observed.hint = await page.$eval('#mosaic-token-hint', (s) => s.textContent);

  step = 'use the token: GraphiQL introspects the schema';
  const introspected = page.waitForResponse(
    (r) => r.url() === `${base}/graphql` && r.request().method() === 'POST'
      && /__schema/.test(r.request().postData() || '') && /Bearer /.test(r.request().headers().authorization || ''),
    { timeout: STEP_TIMEOUT_MS },
  );
  await page.type('#mosaic-token', token);
  await page.click('#mosaic-bar button[type="submit"]');
  const response = await introspected;
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  observed.introspection = {
    status: response.status(),
    errors: body && body.errors ? body.errors.map((e) => e.message) : null,
    types: body && body.data && body.data.__schema ? body.data.__schema.types.length : 0,
    queryType: body && body.data && body.data.__schema ? body.data.__schema.queryType.name : null,
  };
  check(response.status() === 200 && observed.introspection.types > 0,
    `the introspection query failed: ${JSON.stringify(observed.introspection)}`);

  step = 'open the docs pane';
  const docsButton = '.graphiql-sidebar button[aria-label*="Documentation Explorer"]';
  await page.waitForSelector(docsButton, { visible: true });
  await page.click(docsButton);
  await page.waitForSelector('.graphiql-doc-explorer', { visible: true });
  // Type links: the root types ("query: QueryRoot"), then all the schema's types.
  const rootType = '.graphiql-doc-explorer-content a.graphiql-doc-explorer-type-name';
  await page.waitForSelector(`${rootType}, .graphiql-doc-explorer-error`, { visible: true });
  observed.docsError = await page.$$eval('.graphiql-doc-explorer-error', (els) => els.map((e) => e.textContent));
  check(observed.docsError.length === 0, `the docs pane shows an error: ${observed.docsError}`);
  observed.rootTypes = await page.$$eval(rootType, (els) => els.map((e) => e.textContent));

  step = 'follow the query type';
  await page.click(rootType);
  await page.waitForSelector('.graphiql-doc-explorer-field-name', { visible: true });
  observed.queryFields = await page.$$eval('.graphiql-doc-explorer-field-name', (els) => els.map((e) => e.textContent));

  await browser.close();
  process.stdout.write(`${JSON.stringify(observed)}\n`);
}

main().catch(fail);
