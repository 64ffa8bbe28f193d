// The browser driver of the end-to-end tests: a long-lived process that
// reads one JSON command per line on stdin and answers each with one JSON
// line on stdout, {"id": ..., "value": ...} or {"id": ..., "error": "..."}.
// Commands, answered in order:
//
//   {"id": 1, "cmd": "launch", "executable": "/usr/bin/chromium", "userDataDir": "/tmp/x", "args": ["--flag"]}
//   {"id": 2, "cmd": "open", "url": "http://127.0.0.1:1234/page.html"}   -> page number
//   {"id": 3, "cmd": "eval", "page": 0, "expr": "window.recorded"}        -> its JSON value
//   {"id": 4, "cmd": "screenshot", "page": 0, "path": "/tmp/shot.png"}
//   {"id": 5, "cmd": "close", "page": 0}
//   {"id": 6, "cmd": "addCookies", "cookies": [{"name": "a", "value": "b", "domain": "127.0.0.1", "path": "/"}]}
//
// The browser is the system's Chromium, headless, with a user data
// directory of the caller's: nothing is ever downloaded. It is closed when
// stdin ends. What pages log to their console goes to stderr.

import { chromium } from 'playwright-core';
import { createInterface } from 'node:readline';

let context = null;
const pages = [];

function page(n) {
  const p = pages[n];
  if (!p) throw new Error(`no page ${n}`);
  return p;
}

async function handle(req) {
  switch (req.cmd) {
    case 'launch':
      if (context) throw new Error('the browser is already launched');
      context = await chromium.launchPersistentContext(req.userDataDir, {
        executablePath: req.executable,
        headless: true,
        args: ['--no-sandbox', '--disable-background-networking', '--disable-component-update', '--no-first-run',
          ...(req.args ?? [])],
        viewport: { width: 1100, height: 800 },
      });
      // Fail a command before the test stops waiting for it (20 s).
      context.setDefaultTimeout(15000);
      return null;
    case 'open': {
      if (!context) throw new Error('launch the browser first');
      const p = await context.newPage();
      const n = pages.push(p) - 1;
      p.on('console', (m) => console.error(`page ${n}: ${m.text()}`));
      p.on('pageerror', (e) => console.error(`page ${n}: uncaught ${e}`));
      await p.goto(req.url);
      return n;
    }
    case 'eval':
      return await page(req.page).evaluate(req.expr);
    case 'screenshot':
      await page(req.page).screenshot({ path: req.path });
      return null;
    case 'close':
      await page(req.page).close();
      return null;
    case 'addCookies':
      if (!context) throw new Error('launch the browser first');
      await context.addCookies(req.cookies);
      return null;
    default:
      throw new Error(`unknown command ${JSON.stringify(req.cmd)}`);
  }
}

for await (const line of createInterface({ input: process.stdin })) {
  let req = {};
  let answer;
  try {
    req = JSON.parse(line);
    answer = { id: req.id, value: (await handle(req)) ?? null };
  } catch (e) {
    answer = { id: req.id, error: String(e?.stack ?? e) };
  }
  process.stdout.write(JSON.stringify(answer) + '\n');
}
await context?.close();
