/**
 * Strict HTTP/1.1 message heads for the raw-socket IDE edge. The parser accepts a deliberately narrow
 * subset; anything outside it is reported as `unsupported`, and the edge then hands the untouched bytes
 * to Node's own HTTP server (llhttp), which either serves the request on the general path or refuses it.
 * So this parser never has to be lenient, and never has to produce an error page for odd input.
 */

/** Header names are RFC 9110 tokens. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
/** Field values: visible ASCII, obs-text, SP and HTAB; no CR, LF, NUL or other controls. */
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/
const REQUEST_LINE = /^(GET|HEAD|POST|PUT|DELETE|OPTIONS|PATCH) (\/[\x21-\x7e]*) HTTP\/1\.1$/
const STATUS_LINE = /^HTTP\/1\.([01]) ([1-5][0-9][0-9])(?: [\t\x20-\x7e\x80-\xff]*)?$/
const DIGITS = /^[0-9]{1,15}$/

export const CRLFCRLF = Buffer.from("\r\n\r\n")

/** What the edge needs to know about a message's framing and connection handling. */
export interface HeadCommon {
  /** Flat `[name, value, …]` list, names as sent. */
  readonly headers: Array<string>
  /** Bytes of the head including the blank line. */
  readonly length: number
  /** Declared body length; undefined when absent. */
  readonly contentLength: number | undefined
  readonly chunked: boolean
  /** Every Connection header's value, joined with ", " (undefined when absent). */
  readonly connection: string | undefined
  readonly connectionClose: boolean
}

export interface RequestHead extends HeadCommon {
  readonly method: string
  readonly target: string
  readonly cookie: string | undefined
  readonly host: string | undefined
  readonly hasAuthorization: boolean
  readonly isUpgrade: boolean
}

export interface ResponseHead extends HeadCommon {
  readonly status: number
  /** The status line's text after the code (may be empty). */
  readonly reason: string
  readonly http10: boolean
  /** Transfer-Encoding present but not ending in chunked: the body runs until the connection closes. */
  readonly untilClose: boolean
}

interface FieldScan {
  headers: Array<string>
  contentLength: number | undefined
  chunked: boolean
  /** Transfer-Encoding seen (any value). */
  transferEncoding: string | undefined
  connection: string | undefined
  cookie: string | undefined
  host: string | undefined
  hasAuthorization: boolean
  hasUpgrade: boolean
}

/** Strips optional whitespace (SP / HTAB only; String#trim would also eat obs-text such as 0xA0). */
const trimOws = (s: string): string => {
  let start = 0
  let end = s.length
  while (start < end && (s.charCodeAt(start) === 32 || s.charCodeAt(start) === 9)) start++
  while (end > start && (s.charCodeAt(end - 1) === 32 || s.charCodeAt(end - 1) === 9)) end--
  return start === 0 && end === s.length ? s : s.slice(start, end)
}

const hasToken = (list: string | undefined, token: string): boolean => {
  if (list === undefined) return false
  for (const part of list.split(",")) if (part.trim().toLowerCase() === token) return true
  return false
}

/** Scans header lines; undefined when any line falls outside the accepted subset. */
const scanFields = (lines: Array<string>): FieldScan | undefined => {
  const scan: FieldScan = {
    headers: [],
    contentLength: undefined,
    chunked: false,
    transferEncoding: undefined,
    connection: undefined,
    cookie: undefined,
    host: undefined,
    hasAuthorization: false,
    hasUpgrade: false
  }
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!
    const colon = line.indexOf(":")
    if (colon <= 0) return undefined
    const name = line.slice(0, colon)
    if (!TOKEN.test(name)) return undefined
    const value = trimOws(line.slice(colon + 1))
    if (!FIELD_VALUE.test(value)) return undefined
    scan.headers.push(name, value)
    switch (name.length) {
      case 4:
        if (name.toLowerCase() === "host") {
          if (scan.host !== undefined) return undefined
          scan.host = value
        }
        break
      case 6:
        if (name.toLowerCase() === "cookie") scan.cookie = scan.cookie === undefined ? value : `${scan.cookie}; ${value}`
        break
      case 7:
        if (name.toLowerCase() === "upgrade") scan.hasUpgrade = true
        break
      case 10:
        if (name.toLowerCase() === "connection") scan.connection = scan.connection === undefined ? value : `${scan.connection}, ${value}`
        break
      case 13:
        if (name.toLowerCase() === "authorization") scan.hasAuthorization = true
        break
      case 14:
        if (name.toLowerCase() === "content-length") {
          if (scan.contentLength !== undefined || !DIGITS.test(value)) return undefined
          scan.contentLength = Number(value)
        }
        break
      case 17:
        if (name.toLowerCase() === "transfer-encoding") {
          if (scan.transferEncoding !== undefined) return undefined
          scan.transferEncoding = value
        }
        break
    }
  }
  return scan
}

const splitHead = (buf: Buffer, length: number): Array<string> | undefined => {
  // latin1 keeps one char per byte, so obs-text survives and the FIELD_VALUE check sees every byte.
  const text = buf.toString("latin1", 0, length - 4)
  if (text.includes("\n\r") || text.includes("\r\r")) return undefined
  const lines = text.split("\r\n")
  for (const line of lines) if (line.includes("\n") || line.includes("\r")) return undefined
  return lines
}

/**
 * Parses a request head occupying `buf[0, length)` (`length` includes the blank line).
 * Undefined means "not in the accepted subset": hand the bytes to Node's server.
 */
export const parseRequestHead = (buf: Buffer, length: number): RequestHead | undefined => {
  const lines = splitHead(buf, length)
  if (lines === undefined) return undefined
  const m = REQUEST_LINE.exec(lines[0]!)
  if (m === null) return undefined
  const scan = scanFields(lines)
  if (scan === undefined || scan.host === undefined) return undefined
  let chunked = false
  if (scan.transferEncoding !== undefined) {
    // Only a lone `chunked` and no Content-Length: anything else is ambiguous (request smuggling).
    if (scan.transferEncoding.toLowerCase() !== "chunked" || scan.contentLength !== undefined) return undefined
    chunked = true
  }
  return {
    method: m[1]!,
    target: m[2]!,
    headers: scan.headers,
    length,
    contentLength: scan.contentLength,
    chunked,
    connection: scan.connection,
    connectionClose: hasToken(scan.connection, "close"),
    cookie: scan.cookie,
    host: scan.host,
    hasAuthorization: scan.hasAuthorization,
    isUpgrade: scan.hasUpgrade || hasToken(scan.connection, "upgrade")
  }
}

/** Parses a response head; undefined means the upstream sent something this edge will not relay (502). */
export const parseResponseHead = (buf: Buffer, length: number): ResponseHead | undefined => {
  const lines = splitHead(buf, length)
  if (lines === undefined) return undefined
  const m = STATUS_LINE.exec(lines[0]!)
  if (m === null) return undefined
  const scan = scanFields(lines)
  if (scan === undefined) return undefined
  const http10 = m[1] === "0"
  let chunked = false
  let untilClose = false
  if (scan.transferEncoding !== undefined) {
    const codings = scan.transferEncoding.toLowerCase().split(",")
    if (codings[codings.length - 1]!.trim() === "chunked") chunked = true
    else untilClose = true
  }
  const status = Number(m[2])
  const reasonStart = lines[0]!.indexOf(" ", 9)
  return {
    status,
    reason: reasonStart < 0 ? "" : lines[0]!.slice(reasonStart + 1),
    http10,
    untilClose: untilClose || (!chunked && scan.contentLength === undefined),
    headers: scan.headers,
    length,
    // With Transfer-Encoding present, Content-Length is ignored (RFC 9112 §6.3).
    contentLength: scan.transferEncoding === undefined ? scan.contentLength : undefined,
    chunked,
    connection: scan.connection,
    connectionClose: hasToken(scan.connection, "close") || (http10 && !hasToken(scan.connection, "keep-alive"))
  }
}

/** Serialises a head: start line, `[name, value, …]` pairs, blank line. */
export const serializeHead = (startLine: string, headers: ReadonlyArray<string>): string => {
  let out = `${startLine}\r\n`
  for (let i = 0; i < headers.length; i += 2) out += `${headers[i]}: ${headers[i + 1]}\r\n`
  return `${out}\r\n`
}
