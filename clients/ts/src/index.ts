// @keyward/client for Node (and Electron's main process): every transport, bundles, launch, pairing.
// The browser entry is ./browser.js (no Node built-in).

export { connect, type ConnectOptions } from './connect.js';
export { launch } from './launch.js';
export { pair } from './pairing.js';
export {
  LaunchedKeyward,
  DEFAULT_LAUNCH_TIMEOUT_MS,
  DEFAULT_STOP_TIMEOUT_MS,
  type LaunchOptions,
  type LaunchedServer,
  type LaunchedExit,
} from './launch.js';
export { pairInMemory, type PairOptions, type PairInMemoryOptions, type PairedClient } from './pairing.js';

// Everything of the browser entry (session, Keyward, errors, native messaging, generated methods).
export * from './browser.js';
export { readBundle, parseBundleToml, DEFAULT_URL, type Bundle } from './bundle.js';
export { HttpLink, parseOwnerUrl, type TlsCredentials, type OwnerUrl } from './links/http.js';
export { UnixLink } from './links/unix.js';
export { NativeStdioLink, type NativeHostOptions } from './links/native-stdio.js';
export { FrameReader, frame } from './links/frames.js';
