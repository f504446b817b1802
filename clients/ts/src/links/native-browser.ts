// Native messaging from a browser extension: `chrome.runtime.connectNative(hostName)` (Chrome,
// Chromium, Edge) or `browser.runtime.connectNative` (Firefox). The browser frames the messages; the
// port carries JSON objects, one answer per message, in order (spec/native-messaging.md). The host
// (`keyward native-host`) relays ciphertext only: the session's keys stay in the extension.
//
// No Node built-in and no @types/chrome: the few members used are declared here.

import { CLIENT_CODES, KeywardError, closedEarly, protocolError, timedOut } from '../errors.js';
import { fromUtf8, utf8 } from '../bytes.js';
import type { Exchange, Link } from '../secure.js';

/** The members of a native-messaging port this link uses. */
export interface NativePort {
  postMessage(message: unknown): void;
  disconnect(): void;
  onMessage: { addListener(listener: (message: unknown) => void): void };
  onDisconnect: { addListener(listener: (port: NativePort) => void): void };
  /** Firefox: why the port disconnected. */
  error?: { message?: string } | null;
}

/** The members of `chrome.runtime` / `browser.runtime` this link uses. */
export interface NativeRuntime {
  connectNative(application: string): NativePort;
  /** Chrome: why the last call (or the port's disconnect) failed. */
  lastError?: { message?: string } | undefined;
}

/** The largest message a browser takes from a host (1 MiB), and the host from the extension. */
export const BROWSER_MAX_MESSAGE = 1024 * 1024;

function isRuntime(value: unknown): value is NativeRuntime {
  return typeof value === 'object' && value !== null && typeof Reflect.get(value, 'connectNative') === 'function';
}

/** The extension runtime of this global scope: Firefox's `browser.runtime`, else Chrome's `chrome.runtime`. */
export function findRuntime(scope: object = globalThis): NativeRuntime | null {
  for (const name of ['browser', 'chrome']) {
    const namespace: unknown = Reflect.get(scope, name);
    if (typeof namespace === 'object' && namespace !== null) {
      const runtime: unknown = Reflect.get(namespace, 'runtime');
      if (isRuntime(runtime)) return runtime;
    }
  }
  return null;
}

interface Slot {
  resolve(body: Uint8Array): void;
  reject(error: KeywardError): void;
  abandoned: boolean;
}

/** A link over a browser's native-messaging port. */
export class NativeBrowserLink implements Link {
  private readonly hostName: string;
  private readonly runtime: NativeRuntime;
  private port: NativePort | null = null;
  private slots: Slot[] = [];
  private closed = false;

  /** `runtime`: the extension runtime (found in the global scope when not given). */
  constructor(hostName: string, runtime?: NativeRuntime) {
    const found = runtime ?? findRuntime();
    if (!found) {
      throw new KeywardError(
        'Unreachable',
        'no extension runtime with connectNative here: native messaging works in an extension with the "nativeMessaging" permission',
        { code: CLIENT_CODES.local },
      );
    }
    this.hostName = hostName;
    this.runtime = found;
  }

  private get where(): string {
    return `the native host ${this.hostName}`;
  }

  private connect(): NativePort {
    let port: NativePort;
    try {
      port = this.runtime.connectNative(this.hostName);
    } catch (error) {
      throw new KeywardError('Unreachable', `${this.where} could not be started: is it installed (\`keyward native-host install\`)?`, {
        code: CLIENT_CODES.transport,
        cause: error,
      });
    }
    this.port = port;
    port.onMessage.addListener((message) => this.take(port, message));
    port.onDisconnect.addListener((gone) => {
      const why = gone.error?.message ?? this.runtime.lastError?.message ?? 'the port was closed';
      this.fail(port, closedEarly(this.where, `(disconnected: ${why}); is it installed for this extension (\`keyward native-host install\`)?`));
    });
    return port;
  }

  private take(port: NativePort, message: unknown): void {
    if (this.port !== port) return;
    const slot = this.slots.shift();
    if (!slot) {
      this.fail(port, protocolError('the native host sent a message nobody asked for'));
      return;
    }
    if (slot.abandoned) return;
    let body: Uint8Array;
    try {
      body = utf8(JSON.stringify(message));
    } catch {
      slot.reject(protocolError('the native host sent a message that is not JSON'));
      return;
    }
    if (body.length > BROWSER_MAX_MESSAGE) slot.reject(protocolError('an answer larger than 1 MiB'));
    else slot.resolve(body);
  }

  private fail(port: NativePort, error: KeywardError): void {
    if (this.port !== port) return;
    this.port = null;
    try {
      port.disconnect();
    } catch {
      // Already disconnected.
    }
    for (const slot of this.slots.splice(0)) if (!slot.abandoned) slot.reject(error);
  }

  async exchange(body: Uint8Array, _session: string | null, timeoutMs: number): Promise<Exchange> {
    if (this.closed) throw closedEarly(this.where, 'because the link was closed');
    if (body.length > BROWSER_MAX_MESSAGE) {
      throw new KeywardError('InvalidArgument', 'a message above the native-messaging limit of 1 MiB', { code: CLIENT_CODES.local });
    }
    // The port carries objects: the browser serializes them again (the envelope is ciphertext).
    const text = fromUtf8(body);
    let message: unknown;
    try {
      message = text === null ? undefined : JSON.parse(text);
    } catch {
      message = undefined;
    }
    if (message === undefined) {
      throw new KeywardError('InvalidArgument', 'a native message must be UTF-8 JSON', { code: CLIENT_CODES.local });
    }
    const port = this.port ?? this.connect();
    const answer = await new Promise<Uint8Array>((resolve, reject) => {
      const slot: Slot = {
        resolve: (b) => {
          clearTimeout(timer);
          resolve(b);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
        abandoned: false,
      };
      const timer = setTimeout(() => {
        slot.abandoned = true;
        reject(timedOut(this.where, timeoutMs));
      }, timeoutMs);
      this.slots.push(slot);
      try {
        port.postMessage(message);
      } catch (error) {
        this.slots.pop();
        slot.reject(closedEarly(this.where, `(postMessage failed: ${error instanceof Error ? error.message : 'unknown'})`));
      }
    });
    return { body: answer, session: null };
  }

  async close(): Promise<void> {
    this.closed = true;
    const port = this.port;
    if (port) this.fail(port, closedEarly(this.where, 'because the link was closed'));
  }
}
