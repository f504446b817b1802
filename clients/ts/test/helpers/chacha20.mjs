// ChaCha20 as rand_chacha's ChaCha20Rng generates it (test code only): a 32-byte seed as the key,
// stream (nonce) zero, a 64-bit block counter from zero in words 12 and 13, the output the blocks'
// sixteen words in little-endian order. So `chachaRandom(seed)` gives the byte stream the Rust
// client draws from, as long as every draw is a whole number of 32-bit words (keys: 32 bytes,
// nonces: 12), which makes a TS session with it reproduce spec/vectors/transcript.json.

const SIGMA = [0x61707865, 0x3320646e, 0x79622d32, 0x6b206574]; // "expand 32-byte k"

function rotl(x, n) {
  return ((x << n) | (x >>> (32 - n))) >>> 0;
}

function quarter(s, a, b, c, d) {
  s[a] = (s[a] + s[b]) >>> 0; s[d] = rotl(s[d] ^ s[a], 16);
  s[c] = (s[c] + s[d]) >>> 0; s[b] = rotl(s[b] ^ s[c], 12);
  s[a] = (s[a] + s[b]) >>> 0; s[d] = rotl(s[d] ^ s[a], 8);
  s[c] = (s[c] + s[d]) >>> 0; s[b] = rotl(s[b] ^ s[c], 7);
}

/** One 64-byte ChaCha20 block for `key` (8 words) and the 64-bit `counter`, stream 0. */
export function chachaBlock(keyWords, counter) {
  const input = new Uint32Array(16);
  input.set(SIGMA, 0);
  input.set(keyWords, 4);
  input[12] = Number(counter & 0xffffffffn);
  input[13] = Number(counter >> 32n);
  const state = Uint32Array.from(input);
  for (let round = 0; round < 10; round++) {
    quarter(state, 0, 4, 8, 12); quarter(state, 1, 5, 9, 13); quarter(state, 2, 6, 10, 14); quarter(state, 3, 7, 11, 15);
    quarter(state, 0, 5, 10, 15); quarter(state, 1, 6, 11, 12); quarter(state, 2, 7, 8, 13); quarter(state, 3, 4, 9, 14);
  }
  const out = new Uint8Array(64);
  const view = new DataView(out.buffer);
  for (let i = 0; i < 16; i++) view.setUint32(4 * i, (state[i] + input[i]) >>> 0, true);
  return out;
}

/** A random source (`random(n)`) that yields ChaCha20Rng's stream for `seed` (32 bytes). */
export function chachaRandom(seed) {
  if (seed.length !== 32) throw new Error('the seed is 32 bytes');
  const view = new DataView(seed.buffer, seed.byteOffset, 32);
  const key = new Uint32Array(8);
  for (let i = 0; i < 8; i++) key[i] = view.getUint32(4 * i, true);
  let counter = 0n;
  let block = new Uint8Array(0);
  let used = 0;
  return (n) => {
    if (n % 4 !== 0) throw new Error('ChaCha20Rng draws whole words: ask for a multiple of 4 bytes');
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      if (used === block.length) {
        block = chachaBlock(key, counter);
        counter += 1n;
        used = 0;
      }
      out[i] = block[used++];
    }
    return out;
  };
}
