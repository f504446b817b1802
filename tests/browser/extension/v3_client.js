// An Owner API V3 client as a browser extension writes one: secp256k1 ECDH from @noble/secp256k1
// (copied beside this file by the test as noble-secp256k1.js), AES-256-GCM from WebCrypto. It sends
// each JSON-RPC request object through a transport, `send(request) -> Promise<answer>`: here the
// native messaging port of `keyward native-host`, which relays it unchanged to the server.

import * as secp from './noble-secp256k1.js';

/** A JSON-RPC error answer (plaintext envelope error or encrypted inner error). */
export class RpcError extends Error {
  constructor(what, error) {
    super(`${what}: ${error.message} (code ${error.code})`);
    this.code = error.code;
    this.rpcMessage = error.message;
  }
}

/** A native messaging port: one answer per message, in order. */
export class NativeTransport {
  constructor(hostName) {
    this.hostName = hostName;
    this.waiting = [];
    this.closed = null;
    this.port = chrome.runtime.connectNative(hostName);
    this.port.onMessage.addListener((message) => {
      const next = this.waiting.shift();
      if (next) {
        next.resolve(message);
      } else {
        this.closed = new Error(`${hostName} sent a message nobody asked for: ${JSON.stringify(message)}`);
      }
    });
    this.port.onDisconnect.addListener(() => {
      const why = chrome.runtime.lastError?.message ?? 'the port was closed';
      this.closed = new Error(`native host ${hostName} disconnected: ${why}`);
      for (const pending of this.waiting.splice(0)) pending.reject(this.closed);
    });
  }

  send(request) {
    if (this.closed) return Promise.reject(this.closed);
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      try {
        this.port.postMessage(request);
      } catch (error) {
        this.waiting.pop();
        reject(error);
      }
    });
  }

  close() {
    this.port.disconnect();
  }
}

export class V3Client {
  constructor(send) {
    this.send = send;
    this.nextId = 1;
    this.key = null;
  }

  /** init_secure_api: a fresh key pair; the AES key is the X coordinate of the shared point. */
  async init() {
    const secret = secp.utils.randomSecretKey();
    const request = {
      jsonrpc: '2.0',
      id: this.nextId++,
      method: 'init_secure_api',
      params: { ecdh_pubkey: toHex(secp.getPublicKey(secret, true)) },
    };
    const serverKey = okOf(await this.send(request), 'init_secure_api');
    if (typeof serverKey !== 'string' || !/^0[23][0-9a-f]{64}$/.test(serverKey)) {
      throw new Error(`init_secure_api answered a key that is not a compressed point: ${JSON.stringify(serverKey)}`);
    }
    const shared = secp.getSharedSecret(secret, fromHex(serverKey), true).slice(1);
    this.key = await crypto.subtle.importKey('raw', shared, { name: 'AES-GCM' }, false, ['encrypt', 'decrypt']);
    secret.fill(0);
    shared.fill(0);
    return serverKey;
  }

  /** One encrypted call; the inner JSON-RPC answer (`result` or `error`). */
  async call(method, params) {
    if (!this.key) throw new Error('call before init_secure_api');
    const id = this.nextId++;
    const nonce = crypto.getRandomValues(new Uint8Array(12));
    const plain = new TextEncoder().encode(JSON.stringify({ jsonrpc: '2.0', id, method, params }));
    const sealed = new Uint8Array(await crypto.subtle.encrypt({ name: 'AES-GCM', iv: nonce }, this.key, plain));
    const outer = await this.send({
      jsonrpc: '2.0',
      id: this.nextId++,
      method: 'encrypted_request_v3',
      params: { nonce: toHex(nonce), body_enc: toBase64(sealed) },
    });
    const envelope = okOf(outer, `encrypted_request_v3 of ${method}`);
    const answerNonce = fromHex(envelope.nonce);
    if (answerNonce.length !== 12) throw new Error(`the answer's nonce is not 12 bytes: ${envelope.nonce}`);
    if (toHex(answerNonce) === toHex(nonce)) throw new Error('the answer reuses the request nonce');
    const opened = await crypto.subtle.decrypt({ name: 'AES-GCM', iv: answerNonce }, this.key, fromBase64(envelope.body_enc));
    const inner = JSON.parse(new TextDecoder().decode(opened));
    if (inner.id !== id) throw new Error(`${method}: the answer has id ${inner.id}, the request ${id}`);
    return inner;
  }

  /** A call's `Ok` value, or an RpcError. */
  async ok(method, params) {
    return okOf(await this.call(method, params), method);
  }
}

function okOf(answer, what) {
  if (answer && answer.error) throw new RpcError(what, answer.error);
  if (!answer || !answer.result || !('Ok' in answer.result)) {
    throw new Error(`${what}: unexpected answer ${JSON.stringify(answer)}`);
  }
  return answer.result.Ok;
}

export function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

export function fromHex(hex) {
  if (typeof hex !== 'string' || hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) {
    throw new Error(`not hex: ${JSON.stringify(hex)}`);
  }
  return Uint8Array.from(hex.match(/../g) ?? [], (pair) => parseInt(pair, 16));
}

function toBase64(bytes) {
  let text = '';
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text);
}

function fromBase64(text) {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}
