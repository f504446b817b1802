// The Keyward connection a front end holds: one secure session over one link, every method of the
// spec typed (methods.gen.ts), and call() for any method by its wire name. No Node built-in here:
// the browser entry uses it too.

import { CLIENT_CODES, KeywardError } from './errors.js';
import { KeywardMethods } from './methods.gen.js';
import { SecureSession, type Link, type SecureSessionOptions } from './secure.js';

/** How a connection reaches its server (no secret in it). */
export interface ConnectionInfo {
  /** `https` (mTLS), `http` (loopback plain HTTP), `unix`, `native` (native messaging) or another link's name. */
  transport: string;
  /** The server's URL (HTTP transports). */
  url?: string;
  /** The Unix socket's path. */
  path?: string;
  /** The native-messaging host's name or command. */
  host?: string;
  /** The client's name in its bundle's keyward.toml, if any (the server's registry is what counts). */
  client?: string;
  /** The client's role in its bundle's keyward.toml, if any. */
  role?: string;
  /** The bundle directory the credentials came from, if any. */
  bundle?: string;
}

/** A connection to a Keyward server: every method of spec/openrpc.json, over one secure session. */
export class Keyward extends KeywardMethods {
  /** The secure session (for re-keying by hand, the session id, raw sends in tests). */
  readonly session: SecureSession;
  private readonly connection: ConnectionInfo;

  constructor(session: SecureSession, info: ConnectionInfo) {
    super();
    this.session = session;
    this.connection = { ...info };
  }

  /** Runs init_secure_api over `link` and returns the connection. The link is closed if that fails. */
  static async open(link: Link, info: ConnectionInfo, options: SecureSessionOptions = {}): Promise<Keyward> {
    let session: SecureSession;
    try {
      session = await SecureSession.open(link, options);
    } catch (error) {
      await link.close().catch(() => undefined);
      throw error;
    }
    return new Keyward(session, info);
  }

  /** How this connection reaches its server, and the current session id (HTTP). */
  get info(): ConnectionInfo & { sessionId: string | null } {
    return { ...this.connection, sessionId: this.session.sessionId };
  }

  /**
   * Calls a method by its wire name (`"list_wallets"`) with a params object (wire names) or a
   * positional array; resolves to its Ok value, rejects with a KeywardError.
   */
  call(method: string, params: object = {}): Promise<unknown> {
    if (typeof method !== 'string' || method.length === 0) {
      return Promise.reject(new KeywardError('InvalidArgument', 'the method name must be a non-empty string', { code: CLIENT_CODES.local }));
    }
    return this.session.call(method, params);
  }

  /** Closes the connection (after the call in flight); later calls fail with variant Closed. */
  close(): Promise<void> {
    return this.session.close();
  }
}
