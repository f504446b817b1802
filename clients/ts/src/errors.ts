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

// ---------------------------------------------------------------------------------------------------
// The server's errors. Codes and messages are spec/protocol.md section 12's; the variant is what a
// program switches on, the message what a person reads (with the fix, where there is one).

/** Variant names for the JSON-RPC codes that are not −32099 method errors. */
const CODE_VARIANTS: Readonly<Record<number, string>> = {
  [-32001]: 'SessionGone',
  [-32002]: 'Envelope',
  [-32003]: 'EncryptionError',
  [-32600]: 'InvalidRequest',
  [-32601]: 'MethodNotFound',
  [-32602]: 'InvalidParams',
  [-32700]: 'ParseError',
  [-32000]: 'Host',
};

/** The code of method failures, whose message is `"Variant: detail"` or `"Variant"`. */
export const METHOD_ERROR = -32099;
/** The envelope code that says "no session: call init_secure_api" (the call did not run). */
export const SESSION_GONE = -32001;

const VARIANT = /^([A-Za-z][A-Za-z0-9_]*)(?::\s*(.*))?$/s;

/** Splits a −32099 message into its variant and detail. */
function splitVariant(message: string): { variant: string; detail: string } {
  const match = VARIANT.exec(message);
  if (!match) return { variant: 'ServerError', detail: message };
  return { variant: match[1]!, detail: match[2] ?? '' };
}

/** The message for a −32099 error: the server's words, then the fix where one is known. */
function methodMessage(variant: string, detail: string, message: string): { variant: string; message: string } {
  if (variant === 'Forbidden' && /revoked/.test(detail)) {
    return {
      variant: 'Revoked',
      message:
        'this client was revoked (or is not registered) on the server: its requests are refused; ' +
        'an owner can list clients with `keyward clients list` and enrol this front end again ' +
        '(`keyward clients add NAME --out DIR` or `keyward pair`)',
    };
  }
  if (variant === 'Forbidden') {
    return {
      variant,
      message: `${message}: this client's role does not allow it (an owner can change it with \`keyward clients role NAME ROLE\`)`,
    };
  }
  if (variant === 'Lifecycle' && /Error opening wallet/.test(detail)) {
    // The server makes the two the same on purpose (it must not tell which wallets exist).
    return { variant, message: `the wallet does not exist or the password is wrong (${message})` };
  }
  if (variant === 'Lifecycle' && /has not been opened/.test(detail)) {
    return { variant, message: `${message}: the wallet is closed; open it with openWallet and use the new token` };
  }
  if (variant === 'Lifecycle' && /too many failed attempts/.test(detail)) {
    return { variant, message: `${message} (wrong passwords are throttled per wallet)` };
  }
  if (variant === 'InvalidKeychainMask') {
    return {
      variant,
      message: 'InvalidKeychainMask: the token is not valid (the wallet was closed, reopened, or the token belongs to another client): open the wallet again and use its new token',
    };
  }
  if (variant === 'Busy') return { variant, message: `${message} (the call did not run: retry it)` };
  return { variant, message };
}

/** The longest server message a KeywardError carries, in characters (then an ellipsis). */
export const MAX_SERVER_MESSAGE = 1_000;

// ANSI/VT control sequences (CSI: ESC [ … final byte), whole; any other ESC goes as a control character.
const ANSI = /\u001b\[[0-?]*[ -/]*[@-~]?/g;
// Line breaks, tabs and the Unicode line and paragraph separators become spaces; every other control
// character (C0, DEL, C1) and the format characters that reorder text (bidi marks, embeddings,
// overrides and isolates) become U+FFFD.
const BREAKS = /[\t\n\r\u2028\u2029]/g;
const CONTROLS = /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

/**
 * Text from outside this process (a server's error message, a launched process's stderr) made fit
 * for a message: no control character or terminal escape, at most `max` characters (then `…`).
 */
export function cleanText(text: string, max = MAX_SERVER_MESSAGE): string {
  // Cleaning never lengthens text: a bounded prefix is all that can show.
  const cut = text.length > 4 * max;
  let clean = (cut ? text.slice(0, 4 * max) : text).replace(ANSI, '\ufffd').replace(BREAKS, ' ').replace(CONTROLS, '\ufffd');
  if (clean.length > max || cut) {
    let end = Math.min(max, clean.length);
    // Do not cut a surrogate pair in two.
    const last = clean.charCodeAt(end - 1);
    if (last >= 0xd800 && last <= 0xdbff) end -= 1;
    clean = `${clean.slice(0, end)}…`;
  }
  return clean;
}

/**
 * A KeywardError for the error a server answered (plaintext envelope error or inner error). The
 * server's message is cleaned first ({@link cleanText}): at most 1,000 characters, no control
 * character or terminal escape.
 */
export function fromServerError(code: number, serverMessage: string): KeywardError {
  const message = cleanText(serverMessage);
  if (code === METHOD_ERROR) {
    const { variant, detail } = splitVariant(message);
    const mapped = methodMessage(variant, detail, message);
    return new KeywardError(mapped.variant, mapped.message, { code });
  }
  if (code === -32002 && /replay/i.test(message)) {
    return new KeywardError('Replay', `${message} (the server refused an envelope it had already accepted)`, { code });
  }
  if (code === SESSION_GONE) {
    return new KeywardError('SessionGone', `${message} (the server no longer knows this session: it was restarted, or the session expired)`, { code });
  }
  const variant = CODE_VARIANTS[code] ?? 'ServerError';
  return new KeywardError(variant, `${message} (code ${code})`, { code });
}

// ---------------------------------------------------------------------------------------------------
// Failures of the transport and of the answer.

/** No server answers at `where` (refused, no such socket, host unreachable). */
export function unreachable(where: string, cause?: unknown): KeywardError {
  return new KeywardError(
    'Unreachable',
    `no keyward server is running at ${where}: start it with \`keyward serve\` (or check the address and port)`,
    { code: CLIENT_CODES.transport, cause },
  );
}

/**
 * A call whose request a link resent after the connection was reset as it went out, when the resend
 * does not tell whether the first copy ran: −32001 (the server restarted in between), −32002 replay
 * (it had run it), or no usable answer at all. Never retried by the client.
 */
export function outcomeUnknown(method: string, cause: KeywardError): KeywardError {
  return new KeywardError(
    'OutcomeUnknown',
    `the connection to the server was reset as ${method} went out, and resending it got ${cause.variant} (${cause.message}): ` +
      `${method} may have run, but its answer was lost. Check (e.g. list or re-read what it changes) before retrying it`,
    { code: CLIENT_CODES.transport, cause },
  );
}

/** No answer in time. */
export function timedOut(where: string, ms: number): KeywardError {
  return new KeywardError(
    'Timeout',
    `no answer from ${where} within ${ms} ms (the server may be overloaded or stuck; the call may or may not have run)`,
    { code: CLIENT_CODES.transport },
  );
}

/** The server refused this client's certificate during or right after the TLS handshake. */
export function tlsRefused(where: string, cause?: unknown): KeywardError {
  return new KeywardError(
    'Tls',
    `the server at ${where} refused this client's certificate: it may have been revoked (\`keyward clients list\`) or belong to another server`,
    { code: CLIENT_CODES.transport, cause },
  );
}

/**
 * The server's TLS refused a certificate its CA signed because no active client has it (rustls'
 * access_denied alert from keyward's verifier): the client was revoked, or never registered.
 */
export function revokedCertificate(where: string, cause?: unknown): KeywardError {
  return new KeywardError(
    'Revoked',
    `the server at ${where} refused this client's certificate: this client was revoked (or is not registered there; \`keyward clients list\` shows it): enrol it again with \`keyward clients add NAME --out DIR\` or \`keyward pair\``,
    { code: CLIENT_CODES.transport, cause },
  );
}

/** This client refused the server's certificate. */
export function tlsUntrusted(where: string, cause?: unknown): KeywardError {
  return new KeywardError(
    'Tls',
    `the server at ${where} presented a certificate this bundle's CA did not sign (or not for this host): the bundle belongs to another server, or the server's certificates were rotated (\`keyward certs rotate\`: enrol this client again)`,
    { code: CLIENT_CODES.transport, cause },
  );
}

/** The connection closed or failed in some other way. */
export function transportFailed(where: string, what: string, cause?: unknown): KeywardError {
  return new KeywardError('Transport', `the connection to ${where} failed: ${what}`, { code: CLIENT_CODES.transport, cause });
}

/** The connection closed before a whole answer came. */
export function closedEarly(where: string, what: string): KeywardError {
  return new KeywardError('Closed', `${where} closed the connection ${what}`, { code: CLIENT_CODES.transport });
}

/** An answer that could not be used. */
export function protocolError(message: string, cause?: unknown): KeywardError {
  return new KeywardError('Protocol', `unusable answer from the server: ${message}`, { code: CLIENT_CODES.protocol, cause });
}

/** Anything thrown where a KeywardError was expected becomes one (no untyped throw leaves the package). */
export function asKeywardError(error: unknown, context: string): KeywardError {
  if (error instanceof KeywardError) return error;
  const what = error instanceof Error ? error.message : String(error);
  return new KeywardError('Internal', `${context}: ${what}`, { code: CLIENT_CODES.local, cause: error });
}
