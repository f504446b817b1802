// JSON-RPC over HTTPS with a client certificate (mutual TLS), or over plain HTTP on a loopback
// address: POST /v3/owner, one keep-alive connection per link, the Keyward-Session header both ways.

import * as http from 'node:http';
import * as https from 'node:https';
import * as tls from 'node:tls';

import {
  CLIENT_CODES,
  KeywardError,
  closedEarly,
  protocolError,
  revokedCertificate,
  timedOut,
  tlsRefused,
  tlsUntrusted,
  transportFailed,
  unreachable,
} from '../errors.js';
import { resendFailed, type Exchange, type Link } from '../secure.js';

/** The header that names a session (HTTP only). */
export const SESSION_HEADER = 'keyward-session';
/** The largest answer a link takes (the server's own limit is far below it). */
export const DEFAULT_MAX_ANSWER_BYTES = 16 * 1024 * 1024;

/** PEM credentials: the CA that signed the server's certificate, and the client's certificate and key. */
export interface TlsCredentials {
  ca: string | Uint8Array;
  cert: string | Uint8Array;
  /** The client's private key (PEM). A Uint8Array given here is zeroed once the TLS context holds it. */
  key: string | Uint8Array;
}

/** A parsed owner-API URL. */
export interface OwnerUrl {
  secure: boolean;
  host: string;
  port: number;
  path: string;
  /** The URL as given, for messages. */
  text: string;
}

function badUrl(url: string, why: string): KeywardError {
  return new KeywardError('InvalidArgument', `${url} is not a usable keyward URL: ${why} (e.g. https://127.0.0.1:3420/v3/owner)`, {
    code: CLIENT_CODES.local,
  });
}

/** Parses `https://host:port/v3/owner` or `http://…` (the path defaults to /v3/owner). */
export function parseOwnerUrl(url: string): OwnerUrl {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw badUrl(url, 'it does not parse');
  }
  if (parsed.protocol !== 'https:' && parsed.protocol !== 'http:') throw badUrl(url, 'it must start with https:// or http://');
  if (parsed.username || parsed.password) throw badUrl(url, 'it must not carry credentials');
  const secure = parsed.protocol === 'https:';
  const host = parsed.hostname.replace(/^\[(.*)\]$/, '$1');
  const port = parsed.port === '' ? (secure ? 443 : 80) : Number(parsed.port);
  const path = parsed.pathname === '/' || parsed.pathname === '' ? '/v3/owner' : parsed.pathname;
  return { secure, host, port, path: path + parsed.search, text: url };
}

/** Whether `host` is a loopback address or name (plain HTTP is served only there). */
export function isLoopback(host: string): boolean {
  const name = host.toLowerCase().replace(/\.$/, '');
  if (name === 'localhost' || name.endsWith('.localhost') || name === '::1') return true;
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(name);
}

/** Node error codes that mean "nobody listens there". */
const UNREACHABLE = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'EAI_AGAIN']);
/** Node/OpenSSL codes of this client refusing the server's certificate. */
const UNTRUSTED = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_GET_ISSUER_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_SIGNATURE_FAILURE',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

function errorCode(error: unknown): string {
  if (typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string') return error.code;
  return '';
}

/** A KeywardError for a failed request (`secure`: over TLS). */
export function classify(error: unknown, where: string, secure: boolean): KeywardError {
  if (error instanceof KeywardError) return error;
  const code = errorCode(error);
  if (UNREACHABLE.has(code)) return unreachable(where, error);
  if (UNTRUSTED.has(code)) return tlsUntrusted(where, error);
  // keyward's verifier answers certificate_revoked for a revoked client's certificate, and
  // access_denied for a certificate of its CA that no active client has.
  if (code.startsWith('ERR_SSL_') && /ALERT_(ACCESS_DENIED|CERTIFICATE_REVOKED)/.test(code)) {
    return revokedCertificate(where, error);
  }
  // Any other alert from the server (certificate required, bad, unknown CA, revoked).
  if (code.startsWith('ERR_SSL_') && /ALERT/.test(code)) return tlsRefused(where, error);
  if (code.startsWith('ERR_SSL_') || code.startsWith('ERR_TLS_')) {
    return new KeywardError('Tls', `TLS with ${where} failed (${code})`, { code: CLIENT_CODES.transport, cause: error });
  }
  if (secure && (code === 'ECONNRESET' || code === 'EPIPE')) {
    // rustls drops a connection whose client certificate it refuses; the client sees a reset.
    return new KeywardError(
      'Tls',
      `the server at ${where} closed the connection during or right after the TLS handshake: it may have refused this client's certificate (revoked: \`keyward clients list\`, or from another server's CA)`,
      { code: CLIENT_CODES.transport, cause: error },
    );
  }
  if (code === 'ECONNRESET' || code === 'EPIPE') return closedEarly(where, 'before it answered');
  return transportFailed(where, code || (error instanceof Error ? error.message : 'unknown error'), error);
}

/** Whether an answer that is not HTTP 200 still carries a JSON-RPC answer (the server's refusals do). */
function isJsonRpc(body: Uint8Array): boolean {
  try {
    const value: unknown = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(body));
    return typeof value === 'object' && value !== null && ('error' in value || 'result' in value);
  } catch {
    return false;
  }
}

function toBuffer(value: string | Uint8Array): Buffer {
  return typeof value === 'string' ? Buffer.from(value, 'utf8') : Buffer.from(value.buffer, value.byteOffset, value.byteLength);
}

/** A link over HTTP(S) to one URL, one keep-alive connection at a time. */
export class HttpLink implements Link {
  private readonly url: OwnerUrl;
  private readonly agent: http.Agent;
  private readonly maxAnswer: number;

  /**
   * `credentials` are required for https:// (the server requires a client certificate) and refused
   * for http://, which is served only on loopback addresses.
   */
  constructor(url: string, credentials: TlsCredentials | null, options: { maxAnswerBytes?: number } = {}) {
    this.url = parseOwnerUrl(url);
    this.maxAnswer = options.maxAnswerBytes ?? DEFAULT_MAX_ANSWER_BYTES;
    if (this.url.secure) {
      if (!credentials) {
        throw new KeywardError(
          'InvalidArgument',
          `${url} needs this client's certificate: give a bundle (a directory written by \`keyward clients add NAME --out DIR\` or \`keyward pair\`)`,
          { code: CLIENT_CODES.local },
        );
      }
      this.agent = new https.Agent({ keepAlive: true, noDelay: true, maxSockets: 1, secureContext: secureContext(credentials), minVersion: 'TLSv1.3' });
    } else {
      if (credentials) throw badUrl(url, 'a client certificate needs an https:// URL');
      if (!isLoopback(this.url.host)) {
        throw badUrl(url, 'plain http:// is served only on a loopback address (use https:// with a bundle)');
      }
      this.agent = new http.Agent({ keepAlive: true, noDelay: true, maxSockets: 1 });
    }
  }

  /** The URL. */
  get where(): string {
    return this.url.text;
  }

  async exchange(body: Uint8Array, session: string | null, timeoutMs: number): Promise<Exchange> {
    try {
      return await this.post(body, session, timeoutMs);
    } catch (error) {
      // A keep-alive connection reset as this request went out: resend the same bytes once on a new
      // connection, and say so. Usually the server had closed the idle connection and never read
      // the request; but it may have received and run it before the reset, and then the resend is
      // refused (a replayed envelope, or −32001 after a restart): the session makes that answer an
      // OutcomeUnknown, never a third send. (The server refuses a replayed envelope, so the resend
      // itself cannot run the call twice.)
      if (!(error instanceof StaleSocket)) throw error;
    }
    try {
      return { ...(await this.post(body, session, timeoutMs)), resent: true };
    } catch (error) {
      // The first copy's fate is unknown here too: the session says so for a call.
      throw resendFailed(error);
    }
  }

  private post(body: Uint8Array, session: string | null, timeoutMs: number): Promise<Exchange> {
    const headers: http.OutgoingHttpHeaders = { 'content-type': 'application/json', 'content-length': body.length };
    if (session !== null) headers[SESSION_HEADER] = session;
    const options: http.RequestOptions = {
      host: this.url.host,
      port: this.url.port,
      path: this.url.path,
      method: 'POST',
      headers,
      agent: this.agent,
    };
    return new Promise<Exchange>((resolve, reject) => {
      let settled = false;
      const finish = (outcome: () => void): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        outcome();
      };
      const request = (this.url.secure ? https : http).request(options, (response) => {
        const chunks: Buffer[] = [];
        let size = 0;
        response.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > this.maxAnswer) {
            finish(() => reject(protocolError(`an answer larger than ${this.maxAnswer} bytes`)));
            request.destroy();
            return;
          }
          chunks.push(chunk);
        });
        response.on('error', (error) => finish(() => reject(classify(error, this.url.text, this.url.secure))));
        response.on('aborted', () => finish(() => reject(closedEarly(this.url.text, 'in the middle of its answer'))));
        response.on('end', () => {
          const answer = new Uint8Array(Buffer.concat(chunks));
          const status = response.statusCode ?? 0;
          if (status !== 200 && !isJsonRpc(answer)) {
            finish(() => reject(protocolError(`HTTP ${status} with a body that is not a JSON-RPC answer (is ${this.url.text} a keyward server?)`)));
            return;
          }
          const named = response.headers[SESSION_HEADER];
          finish(() => resolve({ body: answer, session: typeof named === 'string' ? named : null }));
        });
      });
      const timer = setTimeout(() => {
        finish(() => reject(timedOut(this.url.text, timeoutMs)));
        request.destroy();
      }, timeoutMs);
      request.on('error', (error) => {
        const code = errorCode(error);
        if (request.reusedSocket && (code === 'ECONNRESET' || code === 'EPIPE')) {
          finish(() => reject(new StaleSocket()));
          return;
        }
        finish(() => reject(classify(error, this.url.text, this.url.secure)));
      });
      request.end(body);
    });
  }

  async close(): Promise<void> {
    this.agent.destroy();
  }
}

/** A reused keep-alive connection that turned out closed (internal: the request is resent). */
class StaleSocket extends Error {}

/**
 * One TLS context for the link: the key is parsed once, then its bytes are wiped: the caller's
 * Uint8Array (viewed, not copied), or the Buffer made from a string key (which may sit in Node's
 * shared allocation pool). A JavaScript string itself cannot be wiped.
 */
function secureContext(credentials: TlsCredentials): tls.SecureContext {
  const key = toBuffer(credentials.key);
  try {
    return tls.createSecureContext({
      ca: toBuffer(credentials.ca),
      cert: toBuffer(credentials.cert),
      key,
      minVersion: 'TLSv1.3',
    });
  } catch (error) {
    throw new KeywardError('Bundle', `the client certificate, key or CA could not be loaded (${errorCode(error) || 'bad PEM'})`, {
      code: CLIENT_CODES.local,
      cause: error,
    });
  } finally {
    key.fill(0);
  }
}
