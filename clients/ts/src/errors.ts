// Every failure the package reports is a KeywardError: a JSON-RPC code (the server's, or one of the
// client-side codes below), a variant a program can switch on, and a message for a person that names
// the fix where there is one. No message carries a secret.

/** Codes for failures that never reached (or never came back from) the server. */
export const CLIENT_CODES = {
  /** The transport failed: refused, reset, TLS refused, timed out. */
  transport: -32050,
  /** The answer could not be used: not JSON, not authentic, a stale nonce, a wrong id, too large. */
  protocol: -32051,
  /** A local problem before anything was sent: a bundle, an argument, a launcher. */
  local: -32052,
} as const;

export interface KeywardErrorOptions {
  /** The JSON-RPC code (the server's), or one of CLIENT_CODES. */
  code?: number;
  /** The underlying error (never one that carries a secret). */
  cause?: unknown;
}

/** A failure of a Keyward call, a connection, a bundle, a pairing or a launch. */
export class KeywardError extends Error {
  /** The JSON-RPC code: the server's for an answered error, else one of CLIENT_CODES. */
  readonly code: number;
  /**
   * What kind of failure: the server's variant for −32099 errors (`Forbidden`, `Revoked`, `Busy`,
   * `Lifecycle`, `InvalidKeychainMask`, …), else a name for the code (`SessionGone`, `Replay`,
   * `InvalidParams`, `MethodNotFound`, `Unreachable`, `Timeout`, `Protocol`, `Bundle`, …).
   */
  readonly variant: string;

  constructor(variant: string, message: string, options: KeywardErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'KeywardError';
    this.variant = variant;
    this.code = options.code ?? CLIENT_CODES.local;
  }
}
