// Drives headless Chromium (puppeteer-core) through the knowledge graph page
// of an instance without single sign-on, for tests/api/browser.rs:
//
//   node tests/browser/graph.js <base URL> <session cookie> <CSRF cookie> <workspace ID>
//
// 1. Signed out, /knowledge/graph answers 401 with the sign-in note.
// 2. With the break-glass session's cookies, the page loads, picks the
//    workspace, asks GraphQL for its graph and draws it; once it has drawn
//    a few frames, reads what #graph says was painted in the last one.
// 3. Clicks the first node where the graph drew it: the side panel shows
//    the entry's title and its content as HTML.
//
// Prints one JSON line of observations on stdout and exits 0, or prints the
// failed step and what was observed on stderr and exits 1. Every wait is
// bounded (STEP_TIMEOUT_MS each, DEADLINE_MS for everything).
'use strict';

const puppeteer = require('puppeteer-core');

const STEP_TIMEOUT_MS = Number(process.env.BROWSER_STEP_TIMEOUT_MS || 15000);
const DEADLINE_MS = Number(process.env.BROWSER_DEADLINE_MS || 50000);
const executablePath = process.env.PUPPETEER_EXECUTABLE_PATH || '/usr/bin/chromium';

const observed = { pageErrors: [], cspViolations: [], externalRequests: [] };
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
      const entry = await page.evaluate(() => document.getElementById('entry').outerHTML).catch(() => '');
      where = `\npage: ${page.url()}\npage text: ${String(text).slice(0, 1500)}\npanel: ${entry}`;
    }
  } catch (_) { /* the page is gone */ }
  const reason = error instanceof Failure ? error.message : (error && error.stack) || String(error);
  process.stderr.write(`graph.js: FAILED at step "${step}": ${reason}${where}\n`);
  process.stderr.write(`graph.js: observed so far: ${JSON.stringify(observed)}\n`);
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
}

async function main() {
  const [base, session, csrf, workspace] = process.argv.slice(2);
  check(base && session && csrf && workspace, 'usage: node graph.js <base URL> <session> <csrf> <workspace ID>');
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
  await page.setViewport({ width: 1200, height: 800 });
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  page.setDefaultNavigationTimeout(STEP_TIMEOUT_MS);
  page.on('pageerror', (e) => observed.pageErrors.push(e.message));
  page.on('console', (m) => {
    if (/Content[- ]Security[- ]Policy/i.test(m.text())) observed.cspViolations.push(m.text());
  });
  page.on('request', (r) => {
    if (!r.url().startsWith(base) && !r.url().startsWith('data:')) observed.externalRequests.push(r.url());
  });

  step = 'signed out';
  const out = await page.goto(`${base}/knowledge/graph`, { waitUntil: 'load' });
  observed.signedOut = {
    status: out.status(),
    note: await page.evaluate(() => (document.getElementById('signed-out') || {}).textContent || null),
  };

  step = 'signed in';
  await page.setCookie(
    { name: 'mosaic_session', value: session, url: base, httpOnly: true },
    { name: 'mosaic_csrf', value: csrf, url: base },
  );
  // A fresh load (going to the same URL with only a new #fragment would not reload).
  await page.goto('about:blank');
  const opened = await page.goto(`${base}/knowledge/graph#${encodeURIComponent(workspace)}`, { waitUntil: 'load' });
  observed.status = opened.status();
  check(opened.status() === 200, `the page answered ${opened.status()}`);

  step = 'drawn';
  await page.waitForFunction(
    () => Number(document.getElementById('graph').dataset.frames || 0) >= 5
      || document.getElementById('graph').dataset.state === 'error',
  );
  observed.graph = await page.evaluate(() => {
    const g = document.getElementById('graph');
    return {
      state: g.dataset.state,
      nodes: Number(g.dataset.nodes),
      edges: Number(g.dataset.edges),
      drawnNodes: Number(g.dataset.drawnNodes),
      canvases: g.querySelectorAll('canvas').length,
      picked: document.getElementById('workspace').value,
      status: document.getElementById('status').textContent,
    };
  });
  check(observed.graph.state !== 'error', observed.graph.status);

  step = 'click a node';
  await page.waitForFunction(() => document.getElementById('graph').dataset.state === 'settled');
  observed.framesToSettle = await page.evaluate(() => Number(document.getElementById('graph').dataset.frames));
  const target = await page.evaluate(() => {
    const node = window.mosaicGraph.graphData().nodes[0];
    const at = window.mosaicGraph.graph2ScreenCoords(node.x, node.y);
    const box = document.getElementById('graph').getBoundingClientRect();
    return { title: node.title, x: box.left + at.x, y: box.top + at.y };
  });
  observed.target = target;
  // Over the node, force-graph marks its canvas clickable (on its next frame).
  await page.mouse.move(target.x, target.y);
  await page.waitForFunction(() => document.querySelector('#graph canvas').classList.contains('clickable'));
  await page.mouse.click(target.x, target.y);
  await page.waitForFunction(
    () => !document.getElementById('entry').hidden && document.getElementById('entry-content').innerHTML !== '',
  );
  observed.clicked = await page.evaluate(() => ({
    title: document.getElementById('entry-title').textContent,
    contentHtml: document.getElementById('entry-content').innerHTML,
  }));
  observed.clickedNode = target.title;

  await browser.close();
  process.stdout.write(`${JSON.stringify(observed)}\n`);
}

main().catch(fail);
