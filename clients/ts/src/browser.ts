// @keyward/client/browser: for extensions' service workers and pages. The session, the secure
// session, the Keyward class with every typed method, and native messaging through
// chrome.runtime / browser.runtime. No Node built-in anywhere in this module's imports
// (test/browser-entry.test.mjs checks the built graph).

import { Keyward } from './client.js';
import { NativeBrowserLink, type NativeRuntime } from './links/native-browser.js';
import type { SecureSessionOptions } from './secure.js';

export { Keyward, type ConnectionInfo } from './client.js';
export { SecureSession, DEFAULT_REKEY_AFTER, DEFAULT_TIMEOUT_MS, type Exchange, type Link, type SecureSessionOptions } from './secure.js';
export {
  Session,
  REMEMBERED_NONCES,
  okValue,
  systemRandom,
  type Pending,
  type RandomSource,
  type Sealed,
  type SessionOptions,
} from './session.js';
export { KeywardError, CLIENT_CODES, fromServerError, type KeywardErrorOptions } from './errors.js';
export { NativeBrowserLink, findRuntime, type NativePort, type NativeRuntime } from './links/native-browser.js';
export type { JsonValue } from './json.js';
export * from './methods.gen.js';

/** Options of {@link connectNative}. */
export interface ConnectNativeOptions extends SecureSessionOptions {
  /** The host's name in its manifest (`keyward native-host install` names it `keyward.owner`). */
  hostName?: string;
  /** The extension runtime (default: `browser.runtime` in Firefox, `chrome.runtime` elsewhere). */
  runtime?: NativeRuntime;
}

/** The host name `keyward native-host install` writes into its manifest. */
export const DEFAULT_HOST_NAME = 'keyward.owner';

/** Connects through the native-messaging host and runs init_secure_api. */
export async function connectNative(options: ConnectNativeOptions = {}): Promise<Keyward> {
  const hostName = options.hostName ?? DEFAULT_HOST_NAME;
  const { runtime, hostName: _name, ...session } = options;
  const link = new NativeBrowserLink(hostName, runtime);
  return Keyward.open(link, { transport: 'native', host: hostName }, session);
}
