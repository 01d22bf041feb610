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
// Reports, and bounds its waits, as driver.js (shared with console.js) says.
'use strict';

const { Driver, check } = require('./driver');

const driver = new Driver('graph.js', {
  context: async (page) => `\npanel: ${await page.evaluate(() => document.getElementById('entry').outerHTML)}`,
});
const { observed } = driver;

async function main(d) {
  const [base, session, csrf, workspace] = process.argv.slice(2);
  check(base && session && csrf && workspace, 'usage: node graph.js <base URL> <session> <csrf> <workspace ID>');
  const page = await d.launch(base);

  d.step = 'signed out';
  const out = await page.goto(`${base}/knowledge/graph`, { waitUntil: 'load' });
  observed.signedOut = {
    status: out.status(),
    note: await page.evaluate(() => (document.getElementById('signed-out') || {}).textContent || null),
  };

  d.step = 'signed in';
  await page.setCookie(
    { name: 'mosaic_session', value: session, url: base, httpOnly: true },
    { name: 'mosaic_csrf', value: csrf, url: base },
  );
  // A fresh load (going to the same URL with only a new #fragment would not reload).
  await page.goto('about:blank');
  const opened = await page.goto(`${base}/knowledge/graph#${encodeURIComponent(workspace)}`, { waitUntil: 'load' });
  observed.status = opened.status();
  check(opened.status() === 200, `the page answered ${opened.status()}`);

  d.step = 'drawn';
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

  d.step = 'click a node';
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
}

driver.run(main);
