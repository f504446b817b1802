// Writing the bundle directory `keyward pair` writes (pairing/src/bundle.rs) on Node: ca.crt,
// client.crt, client.key (0600) and keyward.toml, new files only, in a 0700 directory. src/bundle.ts
// reads one.

import { lstat, mkdir, open as openFile, rm, rmdir } from 'node:fs/promises';
import { join } from 'node:path';

import { CLIENT_CODES, KeywardError } from './errors.js';
import type { Endpoints, Granted } from './pair-exchange.js';

/** The files of a bundle (pairing/src/bundle.rs). */
export const BUNDLE_FILES = {
  ca: 'ca.crt',
  cert: 'client.crt',
  key: 'client.key',
  config: 'keyward.toml',
} as const;

function bundleError(dir: string, why: string, cause?: unknown): KeywardError {
  return new KeywardError('Bundle', `cannot write a bundle to ${dir}: ${why}`, { code: CLIENT_CODES.local, cause });
}

function ioCode(error: unknown): string {
  return typeof error === 'object' && error !== null && 'code' in error ? String((error as { code: unknown }).code) : '';
}

/** A TOML basic string (the names, roles and addresses a bundle holds are plain ASCII). */
function tomlString(value: string): string {
  let out = '"';
  for (const c of value) {
    const code = c.codePointAt(0) as number;
    if (c === '"') out += '\\"';
    else if (c === '\\') out += '\\\\';
    else if (c === '\n') out += '\\n';
    else if (c === '\t') out += '\\t';
    else if (c === '\r') out += '\\r';
    else if (code < 0x20 || code === 0x7f) out += `\\u${code.toString(16).toUpperCase().padStart(4, '0')}`;
    else out += c;
  }
  return `${out}"`;
}

/** The bundle's `keyward.toml`, as pairing/src/bundle.rs writes it. */
export function bundleToml(config: { name: string; role: string; endpoints: Endpoints }): string {
  let body = `name = ${tomlString(config.name)}\nrole = ${tomlString(config.role)}\n`;
  if (config.endpoints.url !== null) body += `url = ${tomlString(config.endpoints.url)}\n`;
  if (config.endpoints.quic !== null) body += `quic = ${tomlString(config.endpoints.quic)}\n`;
  return (
    '# A keyward client bundle: `keyward call --tls-dir <this directory> METHOD` uses it.\n' +
    "# name and role are as registered when it was made; the server's registry is what counts.\n" +
    body
  );
}

function isNotFound(error: unknown): boolean {
  return ioCode(error) === 'ENOENT';
}

/**
 * Whether a bundle could be written to `dir`: it is missing, or a directory (not a symlink) that holds
 * none of the four files. Throws a `Bundle` KeywardError otherwise. `pair` checks it before it spends
 * the code.
 */
export async function checkBundleTarget(dir: string): Promise<void> {
  let stat;
  try {
    stat = await lstat(dir);
  } catch (error) {
    if (isNotFound(error)) return;
    throw bundleError(dir, `cannot read it (${ioCode(error) || 'I/O error'})`, error);
  }
  if (stat.isSymbolicLink() || !stat.isDirectory()) {
    throw bundleError(dir, 'not a directory (or a symlink): give `out` a new directory');
  }
  for (const file of Object.values(BUNDLE_FILES)) {
    try {
      await lstat(join(dir, file));
    } catch (error) {
      if (isNotFound(error)) continue;
      throw bundleError(dir, `cannot read it (${ioCode(error) || 'I/O error'})`, error);
    }
    throw bundleError(dir, `it holds ${file} already (a key is never overwritten): give \`out\` a new directory`);
  }
}

/** Writes the four files as pairing/src/bundle.rs does: new files only; on failure nothing of them stays. */
export async function writeBundle(dir: string, granted: Granted, keyPem: Uint8Array): Promise<void> {
  await checkBundleTarget(dir);
  let made = false;
  try {
    await lstat(dir);
  } catch (error) {
    if (!isNotFound(error)) throw bundleError(dir, `cannot read it (${ioCode(error) || 'I/O error'})`, error);
    try {
      await mkdir(dir, { recursive: true, mode: 0o700 });
    } catch (mkdirError) {
      throw bundleError(dir, `cannot make it (${ioCode(mkdirError) || 'I/O error'})`, mkdirError);
    }
    made = true;
  }
  const encoder = new TextEncoder();
  const files: [string, Uint8Array, number][] = [
    [BUNDLE_FILES.key, keyPem, 0o600],
    [BUNDLE_FILES.cert, encoder.encode(granted.certificate), 0o644],
    [BUNDLE_FILES.ca, encoder.encode(granted.ca_certificate), 0o644],
    [BUNDLE_FILES.config, encoder.encode(bundleToml(granted)), 0o644],
  ];
  const written: string[] = [];
  try {
    for (const [file, bytes, mode] of files) {
      const path = join(dir, file);
      const handle = await openFile(path, 'wx', mode);
      written.push(path);
      try {
        await handle.writeFile(bytes);
        await handle.sync();
      } finally {
        await handle.close();
      }
    }
  } catch (error) {
    for (const path of written) await rm(path, { force: true }).catch(() => undefined);
    if (made) await rmdir(dir).catch(() => undefined);
    throw bundleError(dir, `writing it failed (${ioCode(error) || 'I/O error'})`, error);
  }
}
