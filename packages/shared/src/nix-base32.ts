/** Nix's base-32 alphabet: digits and lower-case letters without e, o, t, u (store path hashes, NAR hashes). */
export const NIX_BASE32_ALPHABET = '0123456789abcdfghijklmnpqrsvwxyz';

/** One base-32 digit, as a regular expression character class: `${NIX_BASE32_CHAR}{32}` is a store path's hash part. */
export const NIX_BASE32_CHAR = `[${NIX_BASE32_ALPHABET}]`;

/** Bytes in Nix's base-32, as Nix prints them (its own bit order, not RFC 4648). */
export function nixBase32(bytes: Uint8Array): string {
  const length = Math.ceil((bytes.length * 8) / 5);
  let out = '';
  for (let n = length - 1; n >= 0; n--) {
    const b = n * 5;
    const i = Math.floor(b / 8);
    const j = b % 8;
    const c = (bytes[i]! >> j) | (i + 1 < bytes.length ? bytes[i + 1]! << (8 - j) : 0);
    out += NIX_BASE32_ALPHABET[c & 0x1f];
  }
  return out;
}
