/**
 * Redis Cluster's key slot (CRC16/XMODEM of the key, or of its `{hash tag}`, modulo 16384), as the
 * Cluster specification defines it: used to pick keys that land on a given node.
 */
const TABLE = (() => {
  const t = new Uint16Array(256)
  for (let i = 0; i < 256; i++) {
    let c = i << 8
    for (let j = 0; j < 8; j++) c = c & 0x8000 ? ((c << 1) ^ 0x1021) & 0xffff : (c << 1) & 0xffff
    t[i] = c
  }
  return t
})()

const crc16 = (bytes: Uint8Array): number => {
  let crc = 0
  for (const b of bytes) crc = ((crc << 8) & 0xffff) ^ TABLE[((crc >> 8) ^ b) & 0xff]!
  return crc
}

export const SLOT_COUNT = 16_384

/** The slot of `key` (its hash tag when it has a non-empty one). */
export const keySlot = (key: string): number => {
  const open = key.indexOf("{")
  if (open >= 0) {
    const close = key.indexOf("}", open + 1)
    if (close > open + 1) key = key.slice(open + 1, close)
  }
  return crc16(new TextEncoder().encode(key)) % SLOT_COUNT
}
