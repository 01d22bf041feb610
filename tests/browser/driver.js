// What the page drivers share (graph.js, console.js): headless Chromium
// (puppeteer-core) that resolves only 127.0.0.1, a page watched for uncaught
// errors, Content Security Policy violations and requests leaving the
// instance, bounded waits, and one way to report.
//
// A driver prints one JSON line of observations on stdout and exits 0, or
// prints the failed step and what was observed on stderr and exits 1. Every
// wait is bounded (STEP_TIMEOUT_MS each, the deadline for everything).
'use strict';

const readline = require('readline');
const puppeteer = require('puppeteer-core');

const STEP_TIMEOUT_MS = Number(process.env.BROWSER_STEP_TIMEOUT_MS || 15000);
const executablePath = process.env.PUPPETEER_EXECUTABLE_PATH || '/usr/bin/chromium';

class Failure extends Error {}

function check(condition, message) {
  if (!condition) throw new Failure(message);
}

class Driver {
  // `name` prefixes the failure report; `context(page)` adds page details to it.
  constructor(name, { deadlineMs, context } = {}) {
    this.name = name;
    this.deadlineMs = deadlineMs || Number(process.env.BROWSER_DEADLINE_MS || 50000);
    this.context = context || (async () => '');
    this.step = 'start';
    this.browser = null;
    this.page = null;
    this.lines = null;
    this.observed = { pageErrors: [], cspViolations: [], externalRequests: [] };
  }

  // Runs `main(driver)` within the deadline, then reports.
  run(main) {
    setTimeout(() => this.fail(new Failure(`not finished within ${this.deadlineMs} ms`)), this.deadlineMs).unref();
    main(this).then(() => this.finish(), (e) => this.fail(e));
  }

  // Launches Chromium and opens the page every step uses; requests to
  // anything but `base` are recorded (and cannot resolve).
  async launch(base, extraArgs = []) {
    this.step = 'launch chromium';
    this.browser = await puppeteer.launch({
      executablePath,
      headless: true,
      pipe: true,
      args: [
        '--no-sandbox',
        '--no-proxy-server',
        '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
        '--no-first-run',
        '--no-default-browser-check',
        ...extraArgs,
      ],
      timeout: STEP_TIMEOUT_MS,
    });
    const page = await this.browser.newPage();
    this.page = page;
    await page.setViewport({ width: 1200, height: 800 });
    page.setDefaultTimeout(STEP_TIMEOUT_MS);
    page.setDefaultNavigationTimeout(STEP_TIMEOUT_MS);
    page.on('pageerror', (e) => this.observed.pageErrors.push(e.message));
    page.on('console', (m) => {
      if (/Content[- ]Security[- ]Policy/i.test(m.text())) this.observed.cspViolations.push(m.text());
    });
    page.on('request', (r) => {
      if (!r.url().startsWith(base) && !r.url().startsWith('data:')) this.observed.externalRequests.push(r.url());
    });
    return page;
  }

  // Tells the test it reached `what` (a JSON line on stdout) and waits for
  // its go-ahead, the line `go` on stdin.
  async handshake(what) {
    if (!this.lines) {
      this.lines = { queue: [], waiting: null, reader: readline.createInterface({ input: process.stdin }) };
      this.lines.reader.on('line', (line) => {
        const waiting = this.lines.waiting;
        this.lines.waiting = null;
        if (waiting) waiting(line);
        else this.lines.queue.push(line);
      });
    }
    this.step = `handshake: ${what}`;
    process.stdout.write(`${JSON.stringify({ waiting: what })}\n`);
    const line = this.lines.queue.length
      ? this.lines.queue.shift()
      : await new Promise((resolve) => { this.lines.waiting = resolve; });
    check(line === 'go', `the test answered ${JSON.stringify(line)} at ${what}`);
  }

  async finish() {
    if (this.lines) this.lines.reader.close();
    await this.browser.close();
    process.stdout.write(`${JSON.stringify(this.observed)}\n`);
  }

  async fail(error) {
    let where = '';
    try {
      if (this.page) {
        const text = await this.page.evaluate(() => (document.body ? document.body.innerText : '')).catch(() => '');
        const more = await this.context(this.page).catch(() => '');
        where = `\npage: ${this.page.url()}\npage text: ${String(text).slice(0, 1500)}${more}`;
      }
    } catch (_) { /* the page is gone */ }
    const reason = error instanceof Failure ? error.message : (error && error.stack) || String(error);
    process.stderr.write(`${this.name}: FAILED at step "${this.step}": ${reason}${where}\n`);
    process.stderr.write(`${this.name}: observed so far: ${JSON.stringify(this.observed)}\n`);
    if (this.browser) await this.browser.close().catch(() => {});
    process.exit(1);
  }
}

module.exports = { Driver, Failure, check };
