/**
 * The API relays an agent's console stream (server-sent events) to browsers byte for byte, and whatever
 * answers on the agent's port is in the container owner's hands. This bounds what one event may take,
 * so a stream that never ends an event cannot grow a viewer's buffer without limit (an admin's browser
 * included). A console line is at most CONSOLE_LINE_MAX_CHARS characters; its JSON event stays far below.
 */
export const MAX_AGENT_EVENT_BYTES = 64 * 1024

/**
 * Follows event boundaries (a blank line, "\n\n") across chunks. `accept` is false once the bytes since
 * the last boundary exceed the bound (checked per chunk, so by at most one socket read more).
 */
export class AgentEventBound {
  private sinceBoundary = 0
  private endedWithNewline = false

  accept(chunk: Uint8Array): boolean {
    const bytes = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength)
    const at = bytes.lastIndexOf("\n\n")
    if (at >= 0) this.sinceBoundary = bytes.length - (at + 2)
    else if (this.endedWithNewline && bytes[0] === 0x0a) this.sinceBoundary = bytes.length - 1
    else this.sinceBoundary += bytes.length
    if (bytes.length > 0) this.endedWithNewline = bytes[bytes.length - 1] === 0x0a
    return this.sinceBoundary <= MAX_AGENT_EVENT_BYTES
  }
}
