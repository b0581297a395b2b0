// Drives Quay's React UI (served through the nginx proxy) in headless Chromium and checks the
// usage-log pages against logexport. Run by run.sh; env: BASE, SHOTS, STANDIN, NODE_PATH.
const {chromium} = require('playwright-core');

const BASE = process.env.BASE;
const SHOTS = process.env.SHOTS || '/tmp';
const STANDIN = process.env.STANDIN;
const results = [];
let failed = 0;

function record(name, ok, detail) {
  results.push({name, ok, detail});
  if (!ok) failed += 1;
  console.log(`${ok ? 'PASS' : 'FAIL'}  ${name}${detail ? ' — ' + detail : ''}`);
}

async function step(name, fn) {
  try {
    const detail = await fn();
    record(name, true, detail);
  } catch (e) {
    record(name, false, String(e && e.message ? e.message : e).split('\n')[0]);
  }
}

// Every logexport answer the page received, to check status codes and paging.
function watch(page) {
  const seen = [];
  page.on('response', (r) => {
    const u = new URL(r.url());
    if (/\/(logs|aggregatelogs|exportlogs)$/.test(u.pathname)) {
      seen.push({path: u.pathname, query: u.search, status: r.status(), method: r.request().method()});
    }
  });
  return seen;
}

async function signIn(page, user, password) {
  await page.goto(`${BASE}/signin`);
  await page.locator('#pf-login-username-id').fill(user);
  await page.locator('#pf-login-password-id').fill(password);
  await page.locator('button[type=submit]').click();
  await page.waitForURL((u) => !u.pathname.startsWith('/signin'), {timeout: 15000});
}

// The Logs tab (or the superuser page): chart from aggregatelogs, table, "Load More Logs".
async function checkLogs(page, seen, url, shot, {loadMore = true} = {}) {
  seen.length = 0;
  await page.goto(url);
  const chart = page.getByTestId('usage-logs-chart');
  const table = page.getByTestId('usage-logs-table');
  await table.waitFor({timeout: 30000});
  await chart.waitFor({timeout: 30000});
  const rows = await table.locator('tbody tr').count();
  if (rows === 0) throw new Error('the table has no rows');
  const bars = await chart.locator('path').count();
  let detail = `${rows} rows, chart with ${bars} bar paths`;
  const agg = seen.find((s) => s.path.endsWith('/aggregatelogs'));
  const logs = seen.filter((s) => s.path.endsWith('/logs'));
  if (!agg || agg.status !== 200) throw new Error(`aggregatelogs answered ${agg && agg.status}`);
  if (!logs.length || logs[0].status !== 200) throw new Error(`logs answered ${logs[0] && logs[0].status}`);
  if (loadMore) {
    const more = page.getByRole('button', {name: 'Load More Logs'});
    // The table also loads the next page by itself when its end scrolls into view, which swaps
    // the button for a spinner: a click may find no button, and that is not a failure.
    let clicked = false;
    for (let i = 0; i < 3 && !clicked; i++) {
      clicked = await more.click({timeout: 3000}).then(() => true, () => false);
    }
    detail += clicked ? '; "Load More Logs" clicked' : '; pages loaded by scrolling';
    await page.waitForFunction(
      () => document.querySelectorAll('[data-testid=usage-logs-table] tbody tr').length > 0, null, {timeout: 5000});
    for (let i = 0; i < 50 && !seen.some((s) => s.path.endsWith('/logs') && /next_page=[^&]/.test(s.query)); i++) {
      await page.waitForTimeout(200);
    }
    const paged = seen.filter((s) => s.path.endsWith('/logs') && /next_page=[^&]/.test(s.query));
    if (!paged.length) throw new Error('no request with next_page was made');
    if (paged.some((s) => s.status !== 200)) throw new Error(`a next_page request answered ${paged.map((s) => s.status)}`);
    // The table's own pager counts the rows loaded so far: more than one page of 20 now.
    let loaded = 0;
    for (let i = 0; i < 25 && loaded <= 20; i++) {
      const m = (await page.locator('body').innerText()).match(/\d+ - \d+ of (\d+)/);
      loaded = m ? Number(m[1]) : 0;
      if (loaded <= 20) await page.waitForTimeout(200);
    }
    if (loaded <= 20) throw new Error(`the pager still counts ${loaded} rows after "Load More Logs"`);
    detail += `; ${paged.length} next_page request(s) answered 200, ${loaded} rows loaded`;
  }
  // The UI scrolls an inner container, so a full-page shot is one screen: take the chart and the
  // end of the table (the pager counting the loaded rows) separately.
  await chart.scrollIntoViewIfNeeded();
  await page.screenshot({path: `${SHOTS}/${shot}.png`});
  await page.locator('.pf-v6-c-pagination').last().scrollIntoViewIfNeeded().catch(() => {});
  await page.screenshot({path: `${SHOTS}/${shot}-table.png`});
  return detail + ` (${SHOTS}/${shot}.png, ${shot}-table.png)`;
}

async function exportWith(page, seen, value, shot) {
  seen.length = 0;
  await page.getByTestId('usage-logs-export-button').click();
  await page.getByTestId('usage-logs-export-email-input').fill(value);
  await page.getByTestId('usage-logs-export-confirm-button').click();
  const toast = page.locator('.pf-v6-c-alert__title').filter({hasText: /Logs exported with id|Problem exporting logs/}).last();
  await toast.waitFor({timeout: 15000});
  const text = (await toast.textContent()).replace(/^\s*(Success|Danger) alert:\s*/i, '').trim();
  await page.screenshot({path: `${SHOTS}/${shot}.png`});
  const post = seen.find((s) => s.method === 'POST');
  // Let the toast go before the next export so the next one is read, not this one.
  await page.locator('.pf-v6-c-alert-group button[aria-label^="Close"]').first().click().catch(() => {});
  await page.waitForTimeout(300);
  return {text, status: post && post.status};
}

(async () => {
  const browser = await chromium.launch({executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: ['--no-sandbox']});
  const context = await browser.newContext({viewport: {width: 1400, height: 1000}});
  const page = await context.newPage();
  const seen = watch(page);
  const consoleErrors = [];
  page.on('pageerror', (e) => consoleErrors.push(String(e)));

  await step('sign in as alice through the UI (session cookie)', async () => {
    await signIn(page, 'alice', 'alice-pw');
    return `landed on ${new URL(page.url()).pathname}`;
  });
  await step('organization ns0 — Logs tab', () => checkLogs(page, seen, `${BASE}/organization/ns0?tab=Logs`, 'org-logs'));
  await step('repository ns1/web (repository admin, not namespace admin) — Logs tab',
    () => checkLogs(page, seen, `${BASE}/repository/ns1/web?tab=logs`, 'repo-logs'));
  await step("own namespace alice — Logs tab (the UI calls /organization/alice/...)",
    () => checkLogs(page, seen, `${BASE}/user/alice?tab=Logs`, 'user-logs'));

  await step('organization ns0 — Export Logs modal, e-mail', async () => {
    await page.goto(`${BASE}/organization/ns0?tab=Logs`);
    await page.getByTestId('usage-logs-table').waitFor({timeout: 30000});
    const r = await exportWith(page, seen, 'alice@example.com', 'export-email');
    if (r.status !== 200 || !/^Logs exported with id [0-9a-f-]{36}$/.test(r.text)) throw new Error(`${r.status}: ${r.text}`);
    return `${r.status}: "${r.text}"`;
  });
  await step('organization ns0 — Export Logs modal, accepted callback URL', async () => {
    const r = await exportWith(page, seen, `${STANDIN}/_standin/hook`, 'export-callback');
    if (r.status !== 200 || !/^Logs exported with id [0-9a-f-]{36}$/.test(r.text)) throw new Error(`${r.status}: ${r.text}`);
    return `${r.status}: "${r.text}"`;
  });
  await step('organization ns0 — Export Logs modal, refused callback URL shows error_message', async () => {
    const r = await exportWith(page, seen, 'http://169.254.169.254/latest/meta-data', 'export-refused');
    if (r.status !== 400 || !/^Problem exporting logs: invalid callback_url/.test(r.text)) throw new Error(`${r.status}: ${r.text}`);
    return `${r.status}: "${r.text}"`;
  });
  await step('repository ns1/web — Export Logs modal, e-mail', async () => {
    await page.goto(`${BASE}/repository/ns1/web?tab=logs`);
    await page.getByTestId('usage-logs-table').waitFor({timeout: 30000});
    const r = await exportWith(page, seen, 'alice@example.com', 'export-repo');
    if (r.status !== 200 || !/^Logs exported with id /.test(r.text)) throw new Error(`${r.status}: ${r.text}`);
    return `${r.status}: "${r.text}"`;
  });
  await step('own namespace — Export Logs modal, e-mail', async () => {
    await page.goto(`${BASE}/user/alice?tab=Logs`);
    await page.getByTestId('usage-logs-table').waitFor({timeout: 30000});
    const r = await exportWith(page, seen, 'alice@example.com', 'export-user');
    if (r.status !== 200 || !/^Logs exported with id /.test(r.text)) throw new Error(`${r.status}: ${r.text}`);
    return `${r.status}: "${r.text}"`;
  });
  if (process.env.AUTH_MODE !== 'tokens') await step('not an admin: /organization/ns1/logs is 403, never 401 (the UI would sign out)', async () => {
    const r = await page.evaluate(async () => {
      const csrf = (await (await fetch('/csrf_token')).json()).csrf_token;
      const res = await fetch('/api/v1/organization/ns1/logs', {headers: {'X-Requested-With': 'XMLHttpRequest', 'X-CSRF-Token': csrf}});
      return {status: res.status, body: await res.text()};
    });
    if (r.status !== 403) throw new Error(`${r.status} ${r.body.slice(0, 160)}`);
    return `403 ${r.body.slice(0, 160)}`;
  });
  await step('still signed in after all of the above', async () => {
    await page.goto(`${BASE}/organization/ns0?tab=Logs`);
    await page.getByTestId('usage-logs-table').waitFor({timeout: 30000});
    if (new URL(page.url()).pathname.startsWith('/signin')) throw new Error('sent to /signin');
    return 'yes';
  });

  const root = await (await browser.newContext({viewport: {width: 1400, height: 1000}})).newPage();
  const rootSeen = watch(root);
  await step('sign in as root (superuser)', async () => {
    await signIn(root, 'root', 'root-pw');
    return 'ok';
  });
  await step('superuser Usage Logs page (/usage-logs)', () => checkLogs(root, rootSeen, `${BASE}/usage-logs`, 'superuser-logs'));

  if (STANDIN) {
    await step('the callback export was delivered to its URL', async () => {
      for (let i = 0; i < 60; i++) {
        const s = await (await fetch(`${STANDIN}/_standin/stats`)).json();
        if (s.hooks && s.hooks.length) return `${s.hooks.length} callback(s): status ${s.hooks.map((h) => h.status).join(', ')}`;
        await new Promise((r) => setTimeout(r, 500));
      }
      throw new Error('no callback within 30 s');
    });
  }
  if (consoleErrors.length) console.log('page errors:', consoleErrors.slice(0, 5));
  await browser.close();
  console.log(`\n${results.length - failed}/${results.length} checks passed`);
  process.exit(failed ? 1 : 0);
})();
