// pair() and pairInMemory() against a live `keyward serve` (real `keyward clients pair` codes) and
// against fake pairing servers (silent, closed, garbage, one without the code, one with it that
// answers wrongly). Every failure must be a KeywardError of the documented variant, and nothing may be
// written unless pairing succeeded.

import assert from 'node:assert/strict';
import { X509Certificate, createPrivateKey, createPublicKey } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import { KeywardError } from '../dist/errors.js';
import { bundleToml, checkBundleTarget, pair, pairInMemory, parsePairUrl } from '../dist/pairing.js';
import {
  ID_CLIENT,
  ID_SERVER,
  confirmation,
  deriveKeys,
  encodeDone,
  encodeOutcome,
  encodeReply,
  encodeRefusal,
  open,
  parseCode,
  parseFinish,
  parseHello,
  parseRequest,
  seal,
} from '../dist/pair-exchange.js';
import {
  Spake2,
} from '../dist/spake2.js';
import { startServer, tempDir } from './helpers/server.mjs';

const unhandled = [];
process.on('unhandledRejection', (reason) => {
  unhandled.push(reason);
  assert.fail(`unhandled rejection: ${reason?.stack ?? reason}`);
});

const enc = new TextEncoder();
let server;
let scratch;

before(async () => {
  server = await startServer();
  scratch = tempDir('keyward-ts-pairing-');
  // A long-lived code for another name keeps the pairing listener open through every test (the
  // listener closes when the last live code is used or voided).
  newCode('keepalive', 'reader', 3600);
});

after(async () => {
  assert.deepEqual(unhandled, [], 'no unhandled rejection');
  await server?.dispose();
});

/** `keyward clients pair --json` for `name`: { code, pair_url, … }. */
function newCode(name, role = 'reader', ttl) {
  const args = ['clients', '--url', server.url, 'pair', '--name', name, '--role', role, '--json'];
  if (ttl) args.push('--ttl', String(ttl));
  const run = server.cli(args);
  assert.equal(run.status, 0, run.stderr);
  const ticket = JSON.parse(run.stdout);
  assert.match(ticket.code, /^[0-9A-Z]{5}-[0-9A-Z]{5}$/);
  assert.match(ticket.pair_url, /^tcp:\/\/127\.0\.0\.1:\d+$/);
  return ticket;
}

function clients() {
  const run = server.cli(['clients', '--url', server.url, 'list', '--json']);
  assert.equal(run.status, 0, run.stderr);
  return JSON.parse(run.stdout);
}

function mode(path) {
  return statSync(path).mode & 0o777;
}

/** Asserts that `promise` rejects with a KeywardError of `variant`; returns the error. */
async function rejectsWith(promise, variant, pattern) {
  let caught;
  await assert.rejects(promise, (error) => {
    caught = error;
    return true;
  });
  assert.ok(caught instanceof KeywardError, `a KeywardError, not ${caught?.stack ?? caught}`);
  assert.equal(caught.variant, variant, caught.message);
  if (pattern) assert.match(caught.message, pattern);
  return caught;
}

/** A code with the same id (first two characters) and a different rest. */
function wrongCode(code, n) {
  const alphabet = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
  const chars = code.replace('-', '').split('');
  const at = 9 - n;
  chars[at] = alphabet[(alphabet.indexOf(chars[at]) + 1 + n) % 32];
  return chars.join('');
}

// --- a live server ------------------------------------------------------------------------------------

test('pair() with a real code writes a bundle that works, as `keyward pair` writes it', async () => {
  const ticket = newCode('laptop', 'reader');
  const out = join(scratch, 'laptop', 'bundle');
  const started = Date.now();
  const codeBytes = enc.encode(ticket.code);
  assert.equal(await pair({ code: codeBytes, pairUrl: ticket.pair_url, name: 'laptop', out }), out);
  const took = Date.now() - started;
  assert.ok(codeBytes.every((b) => b === 0), 'the code bytes given were zeroed');

  assert.equal(mode(out), 0o700);
  assert.equal(mode(join(out, 'client.key')), 0o600);
  for (const file of ['ca.crt', 'client.crt', 'keyward.toml']) assert.ok(existsSync(join(out, file)), file);
  const keyPem = readFileSync(join(out, 'client.key'), 'utf8');
  assert.match(keyPem, /^-----BEGIN PRIVATE KEY-----\n([A-Za-z0-9+/=]{1,64}\n)+-----END PRIVATE KEY-----\n$/);
  const cert = new X509Certificate(readFileSync(join(out, 'client.crt')));
  assert.ok(cert.verify(new X509Certificate(readFileSync(join(out, 'ca.crt'))).publicKey));
  assert.deepEqual(
    cert.publicKey.export({ type: 'spki', format: 'der' }),
    createPublicKey(createPrivateKey(keyPem)).export({ type: 'spki', format: 'der' }),
  );
  const toml = readFileSync(join(out, 'keyward.toml'), 'utf8');
  assert.equal(toml, bundleToml({ name: 'laptop', role: 'reader', endpoints: { url: server.url, quic: server.quic } }));

  const record = clients().find((c) => c.name === 'laptop');
  assert.equal(record?.role, 'reader');
  assert.ok(record.identity.cert, 'registered by its certificate');

  // The bundle works, with the URL given and with the one its keyward.toml names.
  for (const args of [['--url', server.url], []]) {
    const call = server.cli(['call', '--tls-dir', out, ...args, 'list_wallets']);
    assert.equal(call.status, 0, call.stderr);
    assert.equal(call.stdout.trim(), '[]');
  }

  // The Rust client's bundle for the same server has the same keyward.toml (but the name and role).
  const rust = newCode('laptop-rs', 'signer');
  const rustOut = join(scratch, 'laptop-rs');
  const run = server.cli(['pair', '--url', rust.pair_url, '--out', rustOut, '--code-stdin'], { input: `${rust.code}\n` });
  assert.equal(run.status, 0, run.stderr);
  assert.equal(
    readFileSync(join(rustOut, 'keyward.toml'), 'utf8'),
    toml.replace('name = "laptop"', 'name = "laptop-rs"').replace('role = "reader"', 'role = "signer"'),
  );
  assert.equal(mode(rustOut), mode(out));
  assert.equal(mode(join(rustOut, 'client.key')), mode(join(out, 'client.key')));
  assert.ok(took < 5000, `pairing took ${took} ms`);
});

test('pairInMemory() returns credentials and writes nothing', async () => {
  const ticket = newCode('keychain', 'signer');
  const creds = await pairInMemory({ code: ticket.code.toLowerCase(), pairUrl: ticket.pair_url });
  assert.equal(creds.name, 'keychain');
  assert.equal(creds.role, 'signer');
  assert.equal(creds.endpoints.url, server.url);
  assert.equal(creds.endpoints.quic, server.quic);
  assert.match(creds.keyPem, /^-----BEGIN PRIVATE KEY-----\n/);
  const cert = new X509Certificate(creds.certPem);
  assert.ok(cert.verify(new X509Certificate(creds.caPem).publicKey));
  assert.deepEqual(
    cert.publicKey.export({ type: 'spki', format: 'der' }),
    createPublicKey(createPrivateKey(creds.keyPem)).export({ type: 'spki', format: 'der' }),
  );
  assert.equal(clients().find((c) => c.name === 'keychain')?.role, 'signer');
});

test('three wrong codes each give WrongCode, then the right code is void', async () => {
  const ticket = newCode('guessed', 'owner');
  for (let n = 0; n < 3; n++) {
    const wrong = wrongCode(ticket.code, n);
    assert.notEqual(wrong, ticket.code.replace('-', ''));
    const out = join(scratch, `guessed-${n}`);
    const error = await rejectsWith(pair({ code: wrong, pairUrl: ticket.pair_url, out }), 'WrongCode', /keyward clients pair/);
    assert.ok(!error.message.includes(wrong.slice(2)) && !error.message.includes(ticket.code.slice(2)), 'no code in the message');
    assert.ok(!existsSync(out), 'nothing written');
  }
  const out = join(scratch, 'guessed');
  await rejectsWith(pair({ code: ticket.code, pairUrl: ticket.pair_url, name: 'guessed', out }), 'WrongCode');
  assert.ok(!existsSync(out));
  assert.equal(clients().find((c) => c.name === 'guessed'), undefined);
});

test('a code for one name used with another is refused, and spent', async () => {
  const ticket = newCode('alpha', 'reader');
  const out = join(scratch, 'beta');
  await rejectsWith(
    pair({ code: ticket.code, pairUrl: ticket.pair_url, name: 'beta', out }),
    'Refused',
    /this code is for client 'alpha', not 'beta'/,
  );
  assert.ok(!existsSync(out));
  await rejectsWith(pair({ code: ticket.code, pairUrl: ticket.pair_url, name: 'alpha', out }), 'WrongCode');
  assert.equal(clients().find((c) => c.name === 'alpha' || c.name === 'beta'), undefined);
});

test('an out that cannot take a bundle is refused before the code is spent', async () => {
  const ticket = newCode('careful', 'reader');
  const holding = join(scratch, 'holding');
  mkdirSync(holding);
  writeFileSync(join(holding, 'client.key'), 'an old key');
  const file = join(scratch, 'a-file');
  writeFileSync(file, 'x');
  const link = join(scratch, 'a-link');
  mkdirSync(join(scratch, 'link-target'));
  symlinkSync(join(scratch, 'link-target'), link);
  for (const [out, why] of [[holding, /holds client\.key already/], [file, /not a directory/], [link, /symlink/]]) {
    await rejectsWith(pair({ code: ticket.code, pairUrl: ticket.pair_url, out }), 'Bundle', why);
    await rejectsWith(checkBundleTarget(out), 'Bundle');
  }
  assert.equal(readFileSync(join(holding, 'client.key'), 'utf8'), 'an old key', 'the old key is untouched');
  // The code was not spent (not even one of its attempts): it still pairs.
  const out = join(scratch, 'careful');
  await pair({ code: ticket.code, pairUrl: ticket.pair_url, name: 'careful', out });
  assert.equal(clients().find((c) => c.name === 'careful')?.role, 'reader');
});

// --- no server, or a fake one ------------------------------------------------------------------------------

/** A TCP server on an ephemeral loopback port; `onConnection(socket, frames)` per connection. */
async function fakeServer(onConnection) {
  const sockets = new Set();
  const seen = [];
  const srv = createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
    const frames = frameReader(socket);
    seen.push(frames);
    Promise.resolve(onConnection(socket, frames)).catch(() => socket.destroy());
  });
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve));
  return {
    url: `tcp://127.0.0.1:${srv.address().port}`,
    seen,
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => srv.close(resolve));
    },
  };
}

/** Reads 4-byte big-endian length-prefixed frames: next() gives a frame, or null at the end. */
function frameReader(socket) {
  let buffer = Buffer.alloc(0);
  let ended = false;
  let wake = null;
  socket.on('data', (chunk) => {
    buffer = Buffer.concat([buffer, chunk]);
    wake?.();
  });
  socket.on('close', () => {
    ended = true;
    wake?.();
  });
  return {
    async next() {
      for (;;) {
        if (buffer.length >= 4 && buffer.length >= 4 + buffer.readUInt32BE(0)) {
          const len = buffer.readUInt32BE(0);
          const body = new Uint8Array(buffer.subarray(4, 4 + len));
          buffer = buffer.subarray(4 + len);
          return body;
        }
        if (ended) return null;
        await new Promise((resolve) => {
          wake = resolve;
        });
        wake = null;
      }
    },
    rest: () => buffer.length,
  };
}

function frame(bytes) {
  const out = Buffer.alloc(4 + bytes.length);
  out.writeUInt32BE(bytes.length, 0);
  out.set(bytes, 4);
  return out;
}

const CODE = '7KQ2M-XR4TD';

test('a silent server gives Timeout within timeoutMs', async () => {
  const fake = await fakeServer(async (_socket, frames) => {
    await frames.next(); // reads Hello, answers nothing
  });
  try {
    const started = Date.now();
    await rejectsWith(pair({ code: CODE, pairUrl: fake.url, out: join(scratch, 'silent'), timeoutMs: 400 }), 'Timeout');
    const took = Date.now() - started;
    assert.ok(took >= 350 && took < 3000, `took ${took} ms`);
    assert.equal(fake.seen.length, 1);
    assert.ok(!existsSync(join(scratch, 'silent')));
  } finally {
    await fake.close();
  }
});

test('a closed port gives Unreachable; a bad address or code is refused before any connection', async () => {
  const probe = await fakeServer(() => {});
  const url = probe.url;
  await probe.close();
  await rejectsWith(pairInMemory({ code: CODE, pairUrl: url }), 'Unreachable', /only while a code is live/);

  const fake = await fakeServer(() => {});
  try {
    for (const bad of ['http://127.0.0.1:1', 'tcp://localhost:3422', 'tcp://127.0.0.1', 'tcp://127.0.0.1:70000', '']) {
      await rejectsWith(pairInMemory({ code: CODE, pairUrl: bad }), 'Unreachable', /tcp:\/\/IP:PORT/);
    }
    assert.deepEqual(parsePairUrl('tcp://127.0.0.1:3422/'), { host: '127.0.0.1', port: 3422 });
    assert.deepEqual(parsePairUrl('[::1]:3422'), { host: '::1', port: 3422 });
    for (const bad of ['', '7KQ2M-XR4T', '7KQ2M-XR4TU', '7KQ2M-XR4TD-1']) {
      const error = await rejectsWith(pairInMemory({ code: bad, pairUrl: fake.url }), 'WrongCode', /10 characters/);
      assert.equal(error.code, -32052);
    }
    await rejectsWith(pair(null), 'WrongCode', /options object/);
    await rejectsWith(pairInMemory({ code: CODE, pairUrl: fake.url, random: () => new Uint8Array(3) }), 'Protocol');
    assert.equal(fake.seen.length, 0, 'nothing connected');
  } finally {
    await fake.close();
  }
});

test('garbage from a fake server gives Protocol (or the refusal it is), never a hang', async () => {
  const replies = [
    ['not JSON', (s) => s.write(frame(enc.encode('hello there'))), 'Protocol'],
    ['an unknown field', (s) => s.write(frame(enc.encode('{"spake":"QUJD","confirm":"QUJD","x":1}'))), 'Protocol'],
    ['a missing field', (s) => s.write(frame(enc.encode('{"spake":"QUJD"}'))), 'Protocol'],
    ['loose base64', (s) => s.write(frame(enc.encode('{"spake":"QUJ","confirm":"QUJD"}'))), 'Protocol'],
    ['an empty frame', (s) => s.write(frame(new Uint8Array(0))), 'Protocol'],
    ['an oversized frame', (s) => s.write(Buffer.from([0, 1, 0, 0])), 'Protocol'],
    ['a truncated frame', (s) => s.end(Buffer.concat([Buffer.from([0, 0, 0, 100]), Buffer.from('{"spake"')])), 'Protocol'],
    ['a close without an answer', (s) => s.end(), 'Unreachable'],
    ['no live code', (s) => s.write(frame(encodeRefusal('no live pairing code has this id: it expired, was used or was voided'))), 'WrongCode'],
    ['a protocol refusal', (s) => s.write(frame(encodeRefusal('not a pairing message: missing field `id`'))), 'Refused'],
  ];
  for (const [what, answer, variant] of replies) {
    const fake = await fakeServer(async (socket, frames) => {
      const hello = parseHello(await frames.next());
      assert.equal(hello.keyward_pair, 1);
      assert.equal(hello.id, '7K');
      answer(socket);
    });
    try {
      const started = Date.now();
      await rejectsWith(pair({ code: CODE, pairUrl: fake.url, out: join(scratch, 'garbage'), timeoutMs: 5000 }), variant);
      assert.ok(Date.now() - started < 2000, `${what}: answered at once, not by the timeout`);
      assert.ok(!existsSync(join(scratch, 'garbage')), `${what}: nothing written`);
    } finally {
      await fake.close();
    }
  }
});

test('a server without the code gets nothing but the SPAKE2 message', async () => {
  let after = 'unset';
  const fake = await fakeServer(async (socket, frames) => {
    const hello = parseHello(await frames.next());
    const b = Spake2.startB(parseCode('7KQ2M-XR4TE').password, enc.encode(ID_CLIENT), enc.encode(ID_SERVER));
    const keys = deriveKeys(b.finish(hello.spake));
    socket.write(frame(encodeReply({ spake: b.message, confirm: confirmation(keys.serverConfirm, 'server', hello.id, hello.spake, b.message) })));
    after = await frames.next();
  });
  try {
    await rejectsWith(pair({ code: CODE, pairUrl: fake.url, out: join(scratch, 'fake'), timeoutMs: 5000 }), 'WrongCode', /did not prove/);
    for (let i = 0; i < 100 && after === 'unset'; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(after, null, 'the client closed without sending another message');
  } finally {
    await fake.close();
  }
  // Random bytes for a Reply: also a wrong code (the server proved nothing).
  const random = await fakeServer(async (socket, frames) => {
    await frames.next();
    const bytes = new Uint8Array(33).map(() => Math.floor(Math.random() * 256));
    socket.write(frame(encodeReply({ spake: bytes, confirm: new Uint8Array(32) })));
  });
  try {
    await rejectsWith(pairInMemory({ code: CODE, pairUrl: random.url }), 'WrongCode');
  } finally {
    await random.close();
  }
});

/** A fake server that knows CODE: it answers the Finish with `done(request, keys)` (a frame's body). */
async function knowingServer(done) {
  const requests = [];
  const fake = await fakeServer(async (socket, frames) => {
    const hello = parseHello(await frames.next());
    const b = Spake2.startB(parseCode(CODE).password, enc.encode(ID_CLIENT), enc.encode(ID_SERVER));
    const keys = deriveKeys(b.finish(hello.spake));
    socket.write(frame(encodeReply({ spake: b.message, confirm: confirmation(keys.serverConfirm, 'server', hello.id, hello.spake, b.message) })));
    const finish = parseFinish(await frames.next());
    assert.deepEqual(finish.confirm, confirmation(keys.clientConfirm, 'client', hello.id, hello.spake, b.message));
    const request = parseRequest(await open(keys.clientToServer, finish.sealed));
    requests.push(request);
    socket.write(frame(await done(request, keys)));
  });
  return { ...fake, requests };
}

test('a server with the code that answers wrongly: Refused or Protocol, and nothing written', async () => {
  const tls = server.tlsDir;
  const otherCert = readFileSync(join(tls, 'client.crt'), 'utf8');
  const ca = readFileSync(join(tls, 'ca.crt'), 'utf8');
  const granted = (overrides) => ({
    ok: {
      name: 'phone',
      role: 'reader',
      certificate: otherCert,
      ca_certificate: ca,
      endpoints: { url: 'https://127.0.0.1:1/v3/owner', quic: null },
      ...overrides,
    },
  });
  const sealed = (outcome) => async (_request, keys) => encodeDone({ sealed: await seal(keys.serverToClient, encodeOutcome(outcome)) });
  const cases = [
    ['not registered', sealed({ error: 'a client called \'phone\' exists' }), 'Refused', /could not register this client: a client called 'phone' exists/],
    ['a refusal in clear', async () => encodeRefusal('wrong code'), 'Refused', /wrong code/],
    ['a Done that does not open', async () => encodeDone({ sealed: new Uint8Array(60) }), 'Protocol', /does not open/],
    ['a Done under the other key', async (_r, keys) => encodeDone({ sealed: await seal(keys.clientToServer, encodeOutcome(granted({}))) }), 'Protocol', /does not open/],
    ['an outcome with an unknown field', async (_r, keys) => encodeDone({ sealed: await seal(keys.serverToClient, enc.encode('{"ok":{},"x":1}')) }), 'Protocol'],
    ['a certificate for another key', sealed(granted({})), 'Protocol', /another key/],
    ['a certificate that is not one', sealed(granted({ certificate: 'nope' })), 'Protocol', /not X\.509/],
    ['a CA that is not one', sealed(granted({ ca_certificate: '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n' })), 'Protocol', /CA certificate/],
    ['another name', sealed(granted({ name: 'tablet' })), 'Protocol', /'tablet', not 'phone'/],
  ];
  for (const [what, done, variant, pattern] of cases) {
    const fake = await knowingServer(done);
    const out = join(scratch, 'knowing');
    try {
      await rejectsWith(pair({ code: CODE, pairUrl: fake.url, name: 'phone', out, timeoutMs: 5000 }), variant, pattern);
      assert.ok(!existsSync(out), `${what}: nothing written`);
      assert.equal(fake.requests.length, 1, what);
      assert.equal(fake.requests[0].name, 'phone');
      assert.match(fake.requests[0].public_key, /^-----BEGIN PUBLIC KEY-----\n[\s\S]+-----END PUBLIC KEY-----\n$/);
    } finally {
      await fake.close();
    }
  }
});
