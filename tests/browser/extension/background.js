// The test extension's service worker: on start, read config.json (written by the test into its
// copy of the extension), run init_secure_api, open_wallet, accounts, a call the role may not make,
// and close_wallet through the native messaging host, and POST what happened to the test.
//
// config.json: {"report_url": "http://127.0.0.1:PORT/result", "host": "keyward.owner",
//               "wallet": NAME, "password": PASSWORD}

import { NativeTransport, RpcError, V3Client } from './v3_client.js';

async function run(config, report) {
  const started = performance.now();
  report.step = 'connectNative';
  const transport = new NativeTransport(config.host);
  const client = new V3Client((request) => transport.send(request));
  try {
    report.step = 'init_secure_api';
    report.server_key = await client.init();
    report.step = 'open_wallet';
    const token = await client.ok('open_wallet', { name: config.wallet, password: config.password });
    report.token_is_64_hex = typeof token === 'string' && /^[0-9a-f]{64}$/.test(token);
    report.step = 'accounts';
    report.accounts = await client.ok('accounts', { token });
    // A reader may not add accounts: the server must know who is calling through the relay.
    report.step = 'create_account_path';
    const refused = await client.call('create_account_path', { token, label: 'browser' });
    report.create_account_path = refused.error ?? { unexpected_result: refused.result };
    report.step = 'close_wallet';
    report.close_wallet = await client.ok('close_wallet', { name: config.wallet });
    report.step = 'done';
    report.ok = true;
  } finally {
    report.elapsed_ms = Math.round(performance.now() - started);
    transport.close();
  }
}

async function main() {
  const report = { extension_id: chrome.runtime.id, ok: false };
  let config;
  try {
    config = await (await fetch(chrome.runtime.getURL('config.json'))).json();
    await run(config, report);
  } catch (error) {
    report.error = error instanceof RpcError || error instanceof Error ? error.message : String(error);
    if (error instanceof RpcError) report.error_code = error.code;
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
