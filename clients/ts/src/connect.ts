// connect(): a Keyward connection over the transport the options name, with init_secure_api run.
//
//   connect({ bundle: dir })                       HTTPS + mTLS, URL from the bundle's keyward.toml
//   connect({ bundle: dir, url })                  HTTPS + mTLS to that URL
//   connect({ url: 'http://127.0.0.1:P/v3/owner' })  plain HTTP on a loopback address
//   connect({ unix: path })                        the Unix socket
//   connect({ nativeHost: { command, args } })     through a native-messaging host process
//   connect({ url, tls: { ca, cert, key } })       HTTPS + mTLS with credentials held in memory

import { readBundle } from './bundle.js';
import { Keyward, type ConnectionInfo } from './client.js';
import { CLIENT_CODES, KeywardError } from './errors.js';
import { HttpLink, type TlsCredentials } from './links/http.js';
import { NativeStdioLink, type NativeHostOptions } from './links/native-stdio.js';
import { UnixLink } from './links/unix.js';
import type { Link, SecureSessionOptions } from './secure.js';

/** Where and how to connect; exactly one of `bundle`, `tls`, `url` alone, `unix`, `nativeHost`. */
export interface ConnectOptions extends SecureSessionOptions {
  /** A bundle directory (`keyward clients add --out`, `keyward pair`) or a server's tls/. */
  bundle?: string;
  /** The server's URL: https:// with `bundle` or `tls`; http:// (loopback only) alone. */
  url?: string;
  /** In-memory credentials for https:// (e.g. what `keyward serve --launcher` prints). */
  tls?: TlsCredentials;
  /** A Unix socket path (`keyward serve --unix PATH`). */
  unix?: string;
  /** A native-messaging host to start and speak Chrome's framing to. */
  nativeHost?: NativeHostOptions;
  /** The largest answer taken, in bytes (default 16 MiB). */
  maxAnswerBytes?: number;
}

function usage(why: string): KeywardError {
  return new KeywardError(
    'InvalidArgument',
    `${why}: connect({ bundle }), connect({ bundle, url }), connect({ url: 'http://127.0.0.1:PORT/v3/owner' }), connect({ unix }), connect({ nativeHost }) or connect({ url, tls })`,
    { code: CLIENT_CODES.local },
  );
}

/** The link and what it reaches, for the options. */
async function linkFor(options: ConnectOptions): Promise<{ link: Link; info: ConnectionInfo }> {
  const limits = options.maxAnswerBytes === undefined ? {} : { maxAnswerBytes: options.maxAnswerBytes };
  const forms = [options.bundle, options.tls, options.unix, options.nativeHost].filter((f) => f !== undefined).length;
  if (forms > 1) throw usage('give one of bundle, tls, unix and nativeHost');
  if (options.unix !== undefined) {
    if (options.url !== undefined) throw usage('unix takes no url');
    const frameLimit = options.maxAnswerBytes === undefined ? {} : { maxFrameBytes: options.maxAnswerBytes };
    return { link: new UnixLink(options.unix, frameLimit), info: { transport: 'unix', path: options.unix } };
  }
  if (options.nativeHost !== undefined) {
    if (options.url !== undefined) throw usage('nativeHost takes no url');
    return { link: new NativeStdioLink(options.nativeHost), info: { transport: 'native', host: options.nativeHost.command } };
  }
  if (options.bundle !== undefined) {
    const bundle = await readBundle(options.bundle);
    const url = options.url ?? bundle.url;
    try {
      const link = new HttpLink(url, { ca: bundle.ca, cert: bundle.cert, key: bundle.key }, limits);
      const info: ConnectionInfo = { transport: 'https', url, bundle: bundle.dir };
      if (bundle.name !== undefined) info.client = bundle.name;
      if (bundle.role !== undefined) info.role = bundle.role;
      return { link, info };
    } finally {
      bundle.key.fill(0);
    }
  }
  if (options.tls !== undefined) {
    if (options.url === undefined) throw usage('tls needs the url');
    return { link: new HttpLink(options.url, options.tls, limits), info: { transport: 'https', url: options.url } };
  }
  if (options.url !== undefined) {
    return { link: new HttpLink(options.url, null, limits), info: { transport: 'http', url: options.url } };
  }
  throw usage('no server named');
}

/**
 * Connects and runs init_secure_api. Rejects with a KeywardError: Unreachable (naming the address and
 * `keyward serve`) when no server runs there, Tls, Timeout, Bundle, InvalidArgument, …
 */
export async function connect(options: ConnectOptions): Promise<Keyward> {
  if (typeof options !== 'object' || options === null) throw usage('connect takes an options object');
  const { link, info } = await linkFor(options);
  const session: SecureSessionOptions = {};
  if (options.random !== undefined) session.random = options.random;
  if (options.timeoutMs !== undefined) session.timeoutMs = options.timeoutMs;
  if (options.rekeyAfter !== undefined) session.rekeyAfter = options.rekeyAfter;
  if (options.namesSession !== undefined) session.namesSession = options.namesSession;
  if (options.reinitWhenGone !== undefined) session.reinitWhenGone = options.reinitWhenGone;
  return Keyward.open(link, info, session);
}
