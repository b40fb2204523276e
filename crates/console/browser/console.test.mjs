// The console in a real browser (Debian's chromium, driven by playwright-core): an operator
// logs in, creates a 3x1 cluster from the form and watches it become healthy, scales it to 4
// shards, runs a failover drill and opens its timeline, reads the key count the drill's
// workload left on the chart, and logs out; a viewer sees no action buttons and the API
// refuses the viewer's POST. Started by crates/cli/tests/console.rs, which runs the console on
// loopback ports the test kit found free and removes the cluster afterwards.
//
// Environment: CONSOLE_URL, OPERATOR_USER, OPERATOR_PASSWORD, VIEWER_USER, VIEWER_PASSWORD,
// CLUSTER (the name to create); SCREENSHOTS (a folder) to save the main pages as PNG.
import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import path from 'node:path';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const base = env('CONSOLE_URL').replace(/\/$/, '');
const cluster = env('CLUSTER');
const shots = process.env.SCREENSHOTS;
const started = Date.now();
const step = (what) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)} s] ${what}`);

async function shot(page, name) {
  if (shots) await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
}

async function login(page, user, password) {
  await page.goto(`${base}/`);
  assert.match(page.url(), /\/login$/, 'an anonymous visit goes to the login page');
  await page.fill('input[name=user]', user);
  await page.fill('input[name=password]', password);
  await Promise.all([page.waitForURL(`${base}/`), page.click('#login button[type=submit]')]);
  assert.match(await page.textContent('#who'), new RegExp(user));
}

// Submits action form `id` and waits for the job it started to end; returns its state.
async function act(page, id, timeout) {
  const before = await page.getAttribute('#job-panel', 'data-job');
  await page.click(`#${id} button[type=submit]`);
  await page.waitForFunction((previous) => {
    const panel = document.getElementById('job-panel');
    return panel.dataset.job && panel.dataset.job !== previous
      && panel.dataset.state && panel.dataset.state !== 'running';
  }, before, { timeout });
  return page.getAttribute('#job-panel', 'data-state');
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});
try {
  const operator = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await operator.newPage();
  page.on('dialog', (dialog) => dialog.accept());
  await login(page, env('OPERATOR_USER'), env('OPERATOR_PASSWORD'));
  step('operator logged in');

  await page.click('#new-cluster');
  await page.fill('#create input[name=name]', cluster);
  await page.fill('#create input[name=masters]', '3');
  await page.fill('#create input[name=replicas]', '1');
  await page.fill('#create input[name=maxmemory]', '64mb');
  await shot(page, 'console-create');
  await Promise.all([
    page.waitForURL(`${base}/clusters/${cluster}`),
    page.click('#create button[type=submit]'),
  ]);
  step('create submitted');
  await page.waitForSelector('#cluster-live .badge[data-health=healthy]', { timeout: 90_000 });
  assert.equal(await page.textContent('#shape'), '3×1');
  step('cluster healthy (3x1)');

  await page.fill('#scale input[name=masters]', '4');
  assert.equal(await act(page, 'scale', 180_000), 'succeeded', await page.textContent('#job-log'));
  await page.waitForFunction(() => document.getElementById('shape')?.textContent === '4×1', null, { timeout: 20_000 });
  await page.waitForSelector('#cluster-live .badge[data-health=healthy]', { timeout: 60_000 });
  step('scaled to 4 shards, healthy');

  await page.fill('#drill input[name=duration_seconds]', '5');
  assert.equal(await act(page, 'drill', 180_000), 'succeeded', await page.textContent('#job-log'));
  step('failover drill passed');
  // The drill's workload wrote keys through the endpoint: the chart's key count shows them.
  await page.waitForFunction(() => Number(document.getElementById('m-keys')?.textContent) > 0, null, { timeout: 20_000 });
  await page.waitForFunction(() => Number(document.getElementById('chart')?.dataset.samples) >= 3, null, { timeout: 20_000 });
  step(`chart reads ${await page.textContent('#m-keys')} keys`);
  await shot(page, 'console-cluster');
  await Promise.all([page.waitForURL(/\/drills\//), page.click('#drill-link')]);
  await page.waitForFunction(() => {
    const img = document.getElementById('timeline');
    return img && img.complete && img.naturalWidth > 0;
  }, null, { timeout: 10_000 });
  assert.match(await page.textContent('pre.report'), /Verdict/);
  step('drill timeline shown');
  await shot(page, 'console-drill');

  await page.goto(`${base}/`);
  await page.waitForSelector(`tr[data-cluster=${cluster}] .badge`);
  await shot(page, 'console-clusters');
  await Promise.all([page.waitForURL(/\/login$/), page.click('#logout')]);
  const after = await page.goto(`${base}/api/v1/session`);
  assert.equal(after.status(), 401, 'the session ended with the logout');
  step('operator logged out');

  const viewerContext = await browser.newContext();
  const viewer = await viewerContext.newPage();
  await login(viewer, env('VIEWER_USER'), env('VIEWER_PASSWORD'));
  assert.equal(await viewer.locator('#new-cluster').count(), 0, 'a viewer has no create button');
  await viewer.goto(`${base}/clusters/${cluster}`);
  await viewer.waitForSelector('#nodes');
  assert.equal(await viewer.locator('form.action, #actions').count(), 0, 'a viewer has no action buttons');
  const status = await viewer.evaluate(async (name) => {
    const csrf = document.querySelector('meta[name="csrf-token"]').content;
    const response = await fetch(`/api/v1/clusters/${name}/failover`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-csrf-token': csrf },
      body: '{}',
    });
    return response.status;
  }, cluster);
  assert.equal(status, 403, "the API refuses a viewer's POST");
  step('viewer: no buttons, POST refused with 403');
  console.log(`browser test passed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
} finally {
  await browser.close();
}
