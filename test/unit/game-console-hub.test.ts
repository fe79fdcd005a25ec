import { describe, expect, it } from "vitest"
import { ConsoleHub } from "../../agent/game/console-hub.ts"
import { cleanConsoleText, commandProblem, CONSOLE_COMMAND_MAX_CHARS, CONSOLE_LINE_MAX_CHARS, parseConsoleEventId } from "../../schemas/console.ts"

/** The SSE messages of a chunk, as { id, event, data }. */
const parse = (chunk: string) =>
  chunk.split("\n\n").filter((m) => m.trim() !== "" && !m.startsWith(":") && !m.startsWith("retry")).map((m) => {
    const fields = Object.fromEntries(m.split("\n").map((l) => [l.slice(0, l.indexOf(":")), l.slice(l.indexOf(":") + 2)]))
    return { id: fields["id"], event: fields["event"], data: JSON.parse(fields["data"] ?? "null") }
  })

const hub = (o: Partial<{ ringSize: number; viewerQueue: number; maxViewers: number }> = {}) =>
  new ConsoleHub({ ringSize: o.ringSize ?? 100, viewerQueue: o.viewerQueue ?? 10, maxViewers: o.maxViewers ?? 4, now: () => 1000 })

describe("console text", () => {
  it("strips ANSI colour and cursor codes and control characters, never shows them raw", () => {
    expect(cleanConsoleText("\u001b[32m[INFO]\u001b[0m Done \u001b[1;31mred\u001b[m")).toBe("[INFO] Done red")
    expect(cleanConsoleText("\u001b]0;title\u0007text\u0008\r")).toBe("text")
    expect(cleanConsoleText("tab\tkept")).toBe("tab\tkept")
  })

  it("cuts very long lines with a marker, and is idempotent", () => {
    const long = "x".repeat(CONSOLE_LINE_MAX_CHARS + 500)
    const cut = cleanConsoleText(long)
    expect(cut.startsWith("x".repeat(CONSOLE_LINE_MAX_CHARS))).toBe(true)
    expect(cut).toMatch(/ … \[line cut: 500 more characters\]$/)
    expect(cleanConsoleText(cut)).toBe(cut)
  })

  it("accepts one printable line as a command, refuses empty, long and multi-line ones", () => {
    expect(commandProblem("say hello")).toBeUndefined()
    expect(commandProblem("  ")).toMatch(/empty/)
    expect(commandProblem("x".repeat(CONSOLE_COMMAND_MAX_CHARS + 1))).toMatch(/at most/)
    expect(commandProblem("stop\nop evil")).toMatch(/one line/)
  })
})

describe("ConsoleHub", () => {
  it("sends the hello and the tail, then live lines with ids that resume exactly", () => {
    const h = hub()
    for (let i = 1; i <= 5; i++) h.publishLine(`line ${i}`, "game")
    const a = h.open({ tail: 2, acceptsCommands: true })!
    const head = parse(a.head)
    expect(head[0]).toMatchObject({ event: "hello", data: { epoch: h.epoch, mode: "tail", acceptsCommands: true } })
    expect(head.slice(1).map((m) => m.data.text)).toEqual(["line 4", "line 5"])
    h.publishLine("line 6", "game")
    h.publishState("running")
    const live = parse(a.viewer.take())
    expect(live.map((m) => m.event)).toEqual(["line", "state"])
    const last = parseConsoleEventId(head.at(-1)!.id!)!
    // resume after line 4: exactly 5, 6 and the state
    const b = h.open({ tail: 0, after: { epoch: h.epoch, seq: last.seq - 1 }, acceptsCommands: true })!
    expect(parse(b.head).slice(1).map((m) => m.data.text ?? m.data.state)).toEqual(["line 5", "line 6", "running"])
    // another epoch (an agent restart): the tail instead
    const c = h.open({ tail: 1, after: { epoch: "other", seq: 1 }, acceptsCommands: false })!
    expect(parse(c.head)[0]!.data.mode).toBe("tail")
    // the hello reports the state it is given without publishing it: the state events stay in order
    const next = h.nextSeq
    const d = h.open({ tail: 0, acceptsCommands: true, state: "stopping" })!
    expect(parse(d.head)[0]!.data.state).toBe("stopping")
    expect(h.nextSeq).toBe(next)
  })

  it("a viewer that does not take its messages gets a dropped marker for the oldest, then the newest, and continues; others miss nothing", () => {
    const h = hub({ viewerQueue: 10 })
    const slow = h.open({ tail: 0, acceptsCommands: true })!.viewer
    const fast = h.open({ tail: 0, acceptsCommands: true })!.viewer
    const fastSeen: Array<string> = []
    for (let i = 1; i <= 100; i++) {
      h.publishLine(`l${i}`, "game")
      fastSeen.push(...parse(fast.take()).map((m) => m.data.text))
    }
    expect(fastSeen).toEqual(Array.from({ length: 100 }, (_, i) => `l${i + 1}`))
    expect(slow.queued).toBe(10)
    expect(slow.droppedTotal).toBe(90)
    // the marker first (the gap comes before what is still queued), then the newest 10 in order
    const first = parse(slow.take())
    expect(first[0]).toMatchObject({ event: "dropped", data: { count: 90, fromSeq: 1, toSeq: 90, reason: "slow_viewer" } })
    expect(first.slice(1).map((m) => m.data.text)).toEqual(Array.from({ length: 10 }, (_, i) => `l${i + 91}`))
    expect(slow.take()).toBe("")
    h.publishLine("after", "game")
    expect(parse(slow.take()).map((m) => m.data.text)).toEqual(["after"])
  })

  it("a viewer that took some, stalled and took again: one marker per gap, the seqs account for every event", () => {
    const h = hub({ viewerQueue: 3 })
    const v = h.open({ tail: 0, acceptsCommands: true })!.viewer
    const seen: Array<ReturnType<typeof parse>[number]> = []
    let woke = 0
    v.onReady(() => woke++)
    for (let i = 1; i <= 2; i++) h.publishLine(`a${i}`, "game")
    expect(woke).toBe(1)
    seen.push(...parse(v.take()))
    for (let i = 1; i <= 8; i++) h.publishLine(`b${i}`, "game")
    seen.push(...parse(v.take()))
    h.publishState("running")
    seen.push(...parse(v.take()))
    expect(seen.map((m) => m.event === "dropped" ? `dropped ${m.data.fromSeq}-${m.data.toSeq}` : m.data.text ?? m.data.state))
      .toEqual(["a1", "a2", "dropped 3-7", "b6", "b7", "b8", "running"])
  })

  it("a resume older than the ring says how much is gone; the ring and viewers are bounded", () => {
    const h = hub({ ringSize: 5, maxViewers: 1 })
    for (let i = 1; i <= 20; i++) h.publishLine(`l${i}`, "game")
    const r = h.open({ tail: 0, after: { epoch: h.epoch, seq: 3 }, acceptsCommands: true })!
    const msgs = parse(r.head)
    expect(msgs[1]).toMatchObject({ event: "dropped", data: { fromSeq: 4, toSeq: 15, count: 12, reason: "resume_gap" } })
    expect(msgs.slice(2).map((m) => m.data.text)).toEqual(["l16", "l17", "l18", "l19", "l20"])
    expect(h.open({ tail: 0, acceptsCommands: true })).toBeUndefined()
    h.close(r.viewer)
    expect(h.open({ tail: 0, acceptsCommands: true })).toBeDefined()
    expect(h.lines(3)).toEqual(["l18", "l19", "l20"])
  })
})
