// The test extension's service worker: on start, read config.json (written by the test into its
// copy of the extension), connect through the native messaging host with @keyward/client's browser
// entry (bundled into keyward-client.js by the test: `npm run build` in clients/ts), run open_wallet,
// accounts, a call the role may not make, and close_wallet, and POST what happened to the test.
//
// config.json: {"report_url": "http://127.0.0.1:PORT/result", "host": "keyward.owner",
//               "wallet": NAME, "password": PASSWORD}

import { KeywardError, connectNative } from './keyward-client.js';

async function run(config, report) {
  const started = performance.now();
  report.step = 'init_secure_api';
  const kw = await connectNative({ hostName: config.host, timeoutMs: 20_000 });
  report.init = 'ok';
  report.transport = kw.info.transport;
  try {
    report.step = 'open_wallet';
    const token = await kw.openWallet({ name: config.wallet, password: new TextEncoder().encode(config.password) });
    report.token_is_64_hex = typeof token === 'string' && /^[0-9a-f]{64}$/.test(token);
    report.step = 'accounts';
    report.accounts = await kw.accounts({ token });
    // A reader may not add accounts: the server must know who is calling through the relay.
    report.step = 'create_account_path';
    try {
      const result = await kw.createAccountPath({ token, label: 'browser' });
      report.create_account_path = { unexpected_result: result };
    } catch (error) {
      if (!(error instanceof KeywardError)) throw error;
      report.create_account_path = { code: error.code, variant: error.variant, message: error.message };
    }
    report.step = 'close_wallet';
    report.close_wallet = await kw.closeWallet({ name: config.wallet });
    report.step = 'done';
    report.ok = true;
  } finally {
    report.elapsed_ms = Math.round(performance.now() - started);
    await kw.close();
  }
}

async function main() {
  const report = { extension_id: chrome.runtime.id, ok: false };
  let config;
  try {
    config = await (await fetch(chrome.runtime.getURL('config.json'))).json();
    await run(config, report);
  } catch (error) {
    report.error = error instanceof Error ? error.message : String(error);
    if (error instanceof KeywardError) {
      report.error_code = error.code;
      report.error_variant = error.variant;
    }
  }
  if (config?.report_url) {
    await fetch(config.report_url, {
      method: 'POST',
      headers: { 'Content-Type': 'text/plain' },
      body: JSON.stringify(report),
    });
  }
}

// No top-level await: a service worker module may not use it.
main().catch((error) => console.error('keyward test extension:', error));
