// Drives headless Chromium (puppeteer-core) through the federation console of
// an instance without single sign-on (the spoke), for tests/api/browser.rs:
//
//   node tests/browser/console.js <spoke URL> <session cookie> <CSRF cookie> \
//        <master URL> <master instance id> <spoke workspace ID>
//
// 1. Signed out, /admin/federation answers 401 with the sign-in note.
// 2. Signed in as the spoke's admin: a plain-http URL is refused with the
//    server's message; connects to the master in the page, then waits for
//    the test (the master connects back).
// 3. Approves the master with a scope in the form: first the choices the
//    server would refuse (no workspace, no resource, a resource both
//    included and excluded, 0 rows) cannot be submitted; then tasks only,
//    at most 2 rows. Waits for the test (a federated query from the master).
// 4. Filters the request audit to the master's allowed requests and reads
//    the QUERY row; with every outcome shown, pages on with "More".
// 5. Edits the grant: the form shows it as it is; saves 3 rows instead of 2.
// 6. Revokes the master, through the confirmation step.
//
// Talks to the test by handshakes (driver.js), and reports, and bounds its
// waits, as driver.js says.
'use strict';

const { Driver, check } = require('./driver');

const driver = new Driver('console.js', {
  deadlineMs: Number(process.env.BROWSER_DEADLINE_MS || 90000),
  context: async (page) => `\nerror: ${await page.evaluate(() => document.getElementById('error').textContent)}` +
    `\nproblems: ${await page.evaluate(() => document.getElementById('grant-problems').textContent)}`,
});
const { observed } = driver;

// The master's row in the peers table, cell by cell.
function peerRow(page, id) {
  return page.evaluate((id) => {
    const row = document.querySelector(`#peers tr[data-peer-id="${id}"]`);
    if (!row) return null;
    const cells = {};
    row.querySelectorAll('td').forEach((td) => { cells[td.dataset.col] = td.textContent; });
    cells.actions = Array.from(row.querySelectorAll('button')).map((b) => b.dataset.action);
    return cells;
  }, id);
}

function untilRow(page, id, predicate) {
  return page.waitForFunction(`(() => {
    const row = document.querySelector('#peers tr[data-peer-id="${id}"]');
    if (!row) return false;
    const cell = (c) => row.querySelector('td[data-col="' + c + '"]').textContent;
    return (${predicate})(cell);
  })()`);
}

// What the grant form would send now, and why not.
function formState(page) {
  return page.evaluate(() => ({
    submitDisabled: document.getElementById('grant-submit').disabled,
    problemFields: Array.from(document.querySelectorAll('#grant-problems li')).map((li) => li.dataset.field),
  }));
}

function resourceBox(page, name, resource) {
  return page.$(`#grant input[name="${name}"][value="${resource}"]`);
}

async function main(d) {
  const [base, session, csrf, masterUrl, master, workspace] = process.argv.slice(2);
  check(base && session && csrf && masterUrl && master && workspace,
    'usage: node console.js <URL> <session> <csrf> <master URL> <master id> <workspace ID>');
  // The instances' certificates come from the test's own CA.
  const page = await d.launch(base, ['--ignore-certificate-errors']);
  const mutations = [];
  page.on('request', (r) => {
    const m = /"query":"mutation[^{]*\{ *(\w+)/.exec(r.postData() || '');
    if (r.url() === `${base}/graphql` && m) mutations.push(m[1]);
  });

  d.step = 'signed out';
  const out = await page.goto(`${base}/admin/federation`, { waitUntil: 'load' });
  observed.signedOut = {
    status: out.status(),
    note: await page.evaluate(() => (document.getElementById('signed-out') || {}).textContent || null),
  };

  d.step = 'signed in';
  await page.setCookie(
    { name: 'mosaic_session', value: session, url: base, httpOnly: true, secure: true },
    { name: 'mosaic_csrf', value: csrf, url: base, secure: true },
  );
  const opened = await page.goto(`${base}/admin/federation`, { waitUntil: 'load' });
  observed.status = opened.status();
  check(opened.status() === 200, `the page answered ${opened.status()}`);
  await page.waitForFunction(() => document.body.dataset.state);
  check(await page.evaluate(() => document.body.dataset.state === 'ready'), 'the console did not load');
  observed.initialPeers = await page.evaluate(() => document.querySelectorAll('#peers tbody tr').length);

  d.step = 'a refused connect';
  // Refused by the server before it sends anything: the answer names the field.
  await page.type('#connect-url', 'http://127.0.0.1:9');
  await page.click('#connect-submit');
  await page.waitForFunction(() => /^[A-Z_]+: /.test(document.getElementById('connect-result').textContent));
  observed.refusedConnect = await page.evaluate(() => document.getElementById('connect-result').textContent);

  d.step = 'connect';
  await page.click('#connect-url', { clickCount: 3 });
  await page.type('#connect-url', masterUrl);
  await page.click('#connect-submit');
  await untilRow(page, master, "(cell) => cell('outbound') === 'requested'");
  observed.connected = await peerRow(page, master);
  observed.connectResult = await page.evaluate(() => document.getElementById('connect-result').textContent);
  await d.handshake('connected');

  d.step = 'the master asks to connect';
  await page.click('#peers-refresh');
  await untilRow(page, master, "(cell) => cell('inbound') === 'pending'");
  observed.pending = await peerRow(page, master);
  await page.click(`#peers tr[data-peer-id="${master}"] button[data-action="approve"]`);
  await page.waitForFunction(() => !document.getElementById('grant-section').hidden);

  d.step = 'invalid scopes cannot be submitted';
  const form = {};
  form.fresh = await formState(page);
  await page.click(`#grant input[name="workspace"][value="${workspace}"]`);
  await page.click('#grant input[name="resources-mode"][value="only"]');
  form.noResource = await formState(page);
  await (await resourceBox(page, 'resource', 'tasks')).click();
  const exclude = await resourceBox(page, 'excluded', 'tasks');
  // A disabled box ignores the click.
  await exclude.click();
  form.excludeIncluded = {
    disabled: await exclude.evaluate((b) => b.disabled),
    checked: await exclude.evaluate((b) => b.checked),
  };
  // Forced past the disabled box, the form still refuses to send it.
  await exclude.evaluate((b) => {
    b.checked = true;
    b.dispatchEvent(new Event('change', { bubbles: true }));
  });
  form.forcedContradiction = await formState(page);
  await page.evaluate(() => document.getElementById('grant').requestSubmit());
  form.mutationsAfterForcedSubmit = mutations.slice();
  await exclude.evaluate((b) => {
    b.checked = false;
    b.dispatchEvent(new Event('change', { bubbles: true }));
  });
  await page.type('#grant-max-rows', '0');
  form.zeroRows = await formState(page);
  await page.click('#grant-max-rows', { clickCount: 3 });
  await page.type('#grant-max-rows', '2');
  form.valid = await formState(page);
  observed.form = form;
  check(!form.valid.submitDisabled, `the valid scope cannot be submitted: ${JSON.stringify(form.valid)}`);

  d.step = 'approve';
  await page.click('#grant-submit');
  await untilRow(page, master, "(cell) => cell('inbound') === 'active'");
  observed.approved = await peerRow(page, master);
  observed.formHidden = await page.evaluate(() => document.getElementById('grant-section').hidden);
  await d.handshake('approved');

  d.step = 'the audit row';
  // Each audit request is numbered (data-asked); data-shown is the one shown.
  const asked = () => page.evaluate(() => Number(document.getElementById('audit').dataset.asked || 0));
  const shown = (after) => page.waitForFunction((n) => {
    const t = document.getElementById('audit').dataset;
    return Number(t.shown) > n && t.shown === t.asked;
  }, {}, after);
  let before = await asked();
  await page.select('#audit-peer', master);
  await page.select('#audit-outcome', 'ALLOWED');
  await shown(before);
  const rows = () => page.evaluate(() => Array.from(document.querySelectorAll('#audit tbody tr')).map((tr) => {
    const cells = {};
    tr.querySelectorAll('td').forEach((td) => { cells[td.dataset.col] = td.textContent; });
    return cells;
  }));
  observed.audit = await rows();
  observed.auditCount = await page.evaluate(() => document.getElementById('audit-count').textContent);

  d.step = 'audit paging';
  before = await asked();
  await page.select('#audit-outcome', '');
  await page.select('#audit-peer', '');
  await shown(before);
  const firstPage = (await rows()).length;
  const more = await page.evaluate(() => !document.getElementById('audit-more').hidden);
  observed.paging = { firstPage, more };
  if (more) {
    before = await asked();
    await page.click('#audit-more');
    await shown(before);
    observed.paging.afterMore = (await rows()).length;
    observed.paging.count = await page.evaluate(() => document.getElementById('audit-count').textContent);
  }

  d.step = 'edit the grant';
  await page.click(`#peers tr[data-peer-id="${master}"] button[data-action="edit"]`);
  await page.waitForFunction(() => !document.getElementById('grant-section').hidden);
  observed.editForm = await page.evaluate(() => {
    const ticked = (name) => Array.from(document.querySelectorAll(`#grant input[name="${name}"]:checked`)).map((b) => b.value);
    return {
      title: document.getElementById('grant-title').textContent,
      submit: document.getElementById('grant-submit').textContent,
      workspaces: ticked('workspace'),
      resourcesMode: ticked('resources-mode')[0],
      resources: ticked('resource'),
      excluded: ticked('excluded'),
      maxRows: document.getElementById('grant-max-rows').value,
      valid: document.getElementById('grant').dataset.valid,
    };
  });
  await page.click('#grant-max-rows', { clickCount: 3 });
  await page.type('#grant-max-rows', '3');
  await page.click('#grant-submit');
  await untilRow(page, master, "(cell) => cell('grant').includes('max 3 rows')");
  observed.edited = await peerRow(page, master);

  d.step = 'revoke';
  await page.click(`#peers tr[data-peer-id="${master}"] button[data-action="revoke"]`);
  observed.confirm = await page.evaluate((id) => {
    const row = document.querySelector(`#peers tr[data-peer-id="${id}"]`);
    const ask = row.querySelector('[data-role="confirm"]');
    return { text: ask ? ask.textContent : null, mutations: null };
  }, master);
  observed.confirm.mutations = mutations.slice();
  await page.click(`#peers tr[data-peer-id="${master}"] button[data-action="confirm-revoke"]`);
  await untilRow(page, master, "(cell) => cell('inbound') === 'revoked'");
  observed.revoked = await peerRow(page, master);
  observed.mutations = mutations;
}

driver.run(main);
