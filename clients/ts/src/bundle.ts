// A client bundle on disk, as `keyward clients add --out DIR` and `keyward pair` write it
// (pairing/src/bundle.rs): ca.crt, client.crt, client.key (0600) and keyward.toml (name, role, url,
// quic). A server's own tls/ directory (the five files, or symlinks into sets/N/) is read the same
// way; it has no keyward.toml, so the URL is the default one.

import { constants } from 'node:fs';
import { access, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';

import { CLIENT_CODES, KeywardError } from './errors.js';

/** The URL a bundle without keyward.toml (a server's tls/) names, as `keyward call` assumes. */
export const DEFAULT_URL = 'https://127.0.0.1:3420/v3/owner';

/** A bundle's files and settings. The key is bytes so that it can be wiped once loaded. */
export interface Bundle {
  /** The directory. */
  dir: string;
  /** ca.crt (PEM). */
  ca: Uint8Array;
  /** client.crt (PEM). */
  cert: Uint8Array;
  /** client.key (PEM): zero it when done (the HTTPS link does once its TLS context holds it). */
  key: Uint8Array;
  /** The client's name in keyward.toml. */
  name?: string;
  /** Its role when the bundle was made (the server's registry is what counts). */
  role?: string;
  /** The server's HTTPS URL from keyward.toml, else {@link DEFAULT_URL}. */
  url: string;
  /** The server's QUIC address from keyward.toml, if any. */
  quic?: string;
}

function bundleError(message: string, cause?: unknown): KeywardError {
  return new KeywardError('Bundle', message, { code: CLIENT_CODES.local, cause });
}

function errorCode(error: unknown): string {
  if (typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string') return error.code;
  return '';
}

const REMAKE = 'make a new one with `keyward clients add NAME --out DIR` or `keyward pair CODE`';

async function readPart(dir: string, file: string): Promise<Uint8Array> {
  const path = join(dir, file);
  try {
    // A view of readFile's own Buffer, not a copy: zeroing the bundle's key zeroes the only copy
    // this package made of it.
    const bytes = await readFile(path);
    return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  } catch (error) {
    const code = errorCode(error);
    if (code === 'ENOENT') throw bundleError(`${path} is missing: the bundle ${dir} is partial (${REMAKE})`, error);
    if (code === 'EACCES') throw bundleError(`${path} is not readable by this user (check its owner and mode)`, error);
    throw bundleError(`${path} could not be read (${code || 'error'})`, error);
  }
}

/** Refuses a private key that group or others can read or write, naming the fix. */
async function checkKeyMode(path: string): Promise<void> {
  let mode: number;
  try {
    mode = (await stat(path)).mode; // follows a server tls/'s symlink to the key itself
  } catch (error) {
    if (errorCode(error) === 'ENOENT') throw bundleError(`${path} is missing: the bundle is partial (${REMAKE})`, error);
    throw bundleError(`${path} could not be read (${errorCode(error) || 'error'})`, error);
  }
  if ((mode & 0o077) !== 0) {
    const octal = (mode & 0o777).toString(8).padStart(4, '0');
    throw bundleError(`${path} is readable by other users (mode ${octal}): run \`chmod 600 ${path}\` and try again`);
  }
}

/** Reads a bundle directory. Every failure is a KeywardError of variant Bundle naming the file. */
export async function readBundle(dir: string): Promise<Bundle> {
  try {
    await access(dir, constants.R_OK | constants.X_OK);
  } catch (error) {
    const code = errorCode(error);
    if (code === 'ENOENT') throw bundleError(`the bundle directory ${dir} does not exist (${REMAKE})`, error);
    throw bundleError(`the bundle directory ${dir} is not readable (${code || 'error'})`, error);
  }
  const settings = await readSettings(dir);
  const ca = await readPart(dir, 'ca.crt');
  const cert = await readPart(dir, 'client.crt');
  await checkKeyMode(join(dir, 'client.key'));
  const key = await readPart(dir, 'client.key');
  const bundle: Bundle = { dir, ca, cert, key, url: settings.url ?? DEFAULT_URL };
  if (settings.name !== undefined) bundle.name = settings.name;
  if (settings.role !== undefined) bundle.role = settings.role;
  if (settings.quic !== undefined) bundle.quic = settings.quic;
  return bundle;
}

/** keyward.toml's settings; none when the file does not exist (a server's tls/). */
async function readSettings(dir: string): Promise<Record<string, string>> {
  const path = join(dir, 'keyward.toml');
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return {};
    throw bundleError(`${path} could not be read (${errorCode(error) || 'error'})`, error);
  }
  try {
    return parseBundleToml(text);
  } catch (error) {
    throw bundleError(`${path} is not a bundle's keyward.toml: ${error instanceof Error ? error.message : 'bad TOML'}`, error);
  }
}

const KEY = /^([A-Za-z0-9_-]+)\s*=\s*(.*)$/;
const ESCAPES: Record<string, string> = { b: '\b', t: '\t', n: '\n', f: '\f', r: '\r', '"': '"', '\\': '\\' };

/**
 * The `key = "string"` lines of a bundle's keyward.toml (what the Rust `toml` crate writes for its
 * flat string settings); comments and blank lines skipped. Anything else is refused: this is not a
 * general TOML parser.
 */
export function parseBundleToml(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  text.split(/\r?\n/).forEach((raw, index) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const match = KEY.exec(line);
    if (!match) throw new Error(`line ${index + 1} is not \`key = "value"\``);
    const value = parseTomlString(match[2]!.trim());
    if (value === null) throw new Error(`line ${index + 1}: the value of ${match[1]} is not a string`);
    out[match[1]!] = value;
  });
  return out;
}

/** A TOML basic ("…") or literal ('…') string, with an optional trailing comment; else null. */
function parseTomlString(text: string): string | null {
  if (text.startsWith("'")) {
    const end = text.indexOf("'", 1);
    return end > 0 && isTrailer(text.slice(end + 1)) ? text.slice(1, end) : null;
  }
  if (!text.startsWith('"')) return null;
  let out = '';
  for (let i = 1; i < text.length; i++) {
    const c = text[i]!;
    if (c === '"') return isTrailer(text.slice(i + 1)) ? out : null;
    if (c !== '\\') {
      out += c;
      continue;
    }
    const next = text[++i] ?? '';
    if (next === 'u' || next === 'U') {
      const width = next === 'u' ? 4 : 8;
      const hex = text.slice(i + 1, i + 1 + width);
      if (!/^[0-9a-fA-F]+$/.test(hex) || hex.length !== width) return null;
      const code = parseInt(hex, 16);
      if (code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) return null;
      out += String.fromCodePoint(code);
      i += width;
    } else if (ESCAPES[next] !== undefined) {
      out += ESCAPES[next];
    } else {
      return null;
    }
  }
  return null;
}

function isTrailer(rest: string): boolean {
  const trimmed = rest.trim();
  return trimmed === '' || trimmed.startsWith('#');
}
