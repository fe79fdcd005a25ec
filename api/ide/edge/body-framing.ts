/**
 * Finds where an HTTP/1.1 message body ends while its bytes are relayed untouched (chunked framing is
 * forwarded as is, never re-encoded). `feed` looks at `buf[start, end)` and says how many of those bytes
 * belong to the body; `done` turns true at the body's last byte. Chunked framing is checked strictly
 * (hex sizes, CRLF, bounded extensions and trailers): a framing error is a protocol error, not data.
 */

export class FramingError extends Error {
  override readonly name = "FramingError"
}

const MAX_SIZE_LINE = 4096
const MAX_TRAILERS = 16 * 1024
const MAX_CHUNK_SIZE_DIGITS = 13

const Chunk = {
  Size: 0,
  Extension: 1,
  SizeLf: 2,
  Data: 3,
  DataCr: 4,
  DataLf: 5,
  TrailerLineStart: 6,
  TrailerLine: 7,
  TrailerLf: 8,
  FinalLf: 9
} as const
type ChunkState = (typeof Chunk)[keyof typeof Chunk]

export interface BodyFramer {
  readonly done: boolean
  /** Number of bytes of `buf[start, end)` that belong to the body (all of them unless it ends inside). */
  feed(buf: Buffer, start: number, end: number): number
}

/** No body at all. */
export const emptyBody = (): BodyFramer => ({ done: true, feed: () => 0 })

export class LengthFramer implements BodyFramer {
  private remaining: number
  constructor(length: number) {
    this.remaining = length
  }
  get done(): boolean {
    return this.remaining === 0
  }
  feed(_buf: Buffer, start: number, end: number): number {
    const n = Math.min(this.remaining, end - start)
    this.remaining -= n
    return n
  }
}

/** Everything until the connection closes is body (`finish()` marks the end). */
export class UntilCloseFramer implements BodyFramer {
  done = false
  feed(_buf: Buffer, start: number, end: number): number {
    return end - start
  }
  finish(): void {
    this.done = true
  }
}

const hexValue = (c: number): number => (c >= 48 && c <= 57 ? c - 48 : c >= 97 && c <= 102 ? c - 87 : c >= 65 && c <= 70 ? c - 55 : -1)

export class ChunkedFramer implements BodyFramer {
  done = false
  private state: ChunkState = Chunk.Size
  private size = 0
  private digits = 0
  private lineBytes = 0
  private trailerBytes = 0

  feed(buf: Buffer, start: number, end: number): number {
    let i = start
    while (i < end && !this.done) {
      if (this.state === Chunk.Data) {
        const n = Math.min(this.size, end - i)
        this.size -= n
        i += n
        if (this.size === 0) this.state = Chunk.DataCr
        continue
      }
      this.step(buf[i]!)
      i++
    }
    return i - start
  }

  private step(c: number): void {
    switch (this.state) {
      case Chunk.Size: {
        const h = hexValue(c)
        if (h >= 0) {
          if (++this.digits > MAX_CHUNK_SIZE_DIGITS) throw new FramingError("chunk size too large")
          this.size = this.size * 16 + h
          this.lineBytes++
          return
        }
        if (this.digits === 0) throw new FramingError("chunk size expected")
        if (c === 0x3b /* ; */) this.state = Chunk.Extension
        else if (c === 0x0d) this.state = Chunk.SizeLf
        else throw new FramingError("invalid character in chunk size")
        this.lineBytes++
        return
      }
      case Chunk.Extension:
        if (++this.lineBytes > MAX_SIZE_LINE) throw new FramingError("chunk extension too long")
        if (c === 0x0d) this.state = Chunk.SizeLf
        else if (c === 0x0a || c === 0) throw new FramingError("invalid character in chunk extension")
        return
      case Chunk.SizeLf:
        if (c !== 0x0a) throw new FramingError("chunk size line must end with CRLF")
        this.digits = 0
        this.lineBytes = 0
        this.state = this.size === 0 ? Chunk.TrailerLineStart : Chunk.Data
        return
      case Chunk.DataCr:
        if (c !== 0x0d) throw new FramingError("chunk data must end with CRLF")
        this.state = Chunk.DataLf
        return
      case Chunk.DataLf:
        if (c !== 0x0a) throw new FramingError("chunk data must end with CRLF")
        this.state = Chunk.Size
        return
      case Chunk.TrailerLineStart:
        if (c === 0x0d) {
          this.state = Chunk.FinalLf
          return
        }
        this.state = Chunk.TrailerLine
        this.trailer(c)
        return
      case Chunk.TrailerLine:
        this.trailer(c)
        return
      case Chunk.TrailerLf:
        if (c !== 0x0a) throw new FramingError("trailer line must end with CRLF")
        this.state = Chunk.TrailerLineStart
        return
      case Chunk.FinalLf:
        if (c !== 0x0a) throw new FramingError("chunked body must end with CRLF")
        this.done = true
        return
      case Chunk.Data:
        return
    }
  }

  private trailer(c: number): void {
    if (++this.trailerBytes > MAX_TRAILERS) throw new FramingError("trailers too large")
    if (c === 0x0d) this.state = Chunk.TrailerLf
    else if (c === 0x0a || c === 0) throw new FramingError("invalid character in trailer")
  }
}
