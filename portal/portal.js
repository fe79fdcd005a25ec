// The demo portal: plain DOM, no framework, no build step. A portal team can copy this file.
//
// Rules it follows:
// - the user token lives in sessionStorage and goes out only as `Authorization: Bearer`;
// - the IDE token is fetched on click and handed over in a form POST into a new tab without opener
//   (see openIde); it never enters any URL, history or console, and the IDE tab cannot reach this page;
// - live state comes from `GET /api/servers/:id/events` (server-sent events read with fetch so the
//   bearer stays in a header); when the stream is unavailable the page polls `/status` instead;
// - a game server's console (`GET /api/servers/:id/console`, SSE read the same way) is opened only while
//   its pane is open (a browser holds ~6 connections per origin); its lines are game output, hostile by
//   definition, so they go into the page as text nodes only, never as HTML.

const TOKEN_KEY = "zlh.portal.userToken"
const POLL_MS = 10_000
const FALLBACK_POLL_MS = 3_000

const $ = (selector, root = document) => root.querySelector(selector)

const state = {
  token: null,
  servers: new Map(), // id -> { record, status, card, stream, poll, console }
  consoleHistory: new Map(), // server id -> commands typed (kept across Refresh)
  devStack: null
}

// ---------- small helpers ----------

const say = (text) => {
  $("#messages").textContent = text
}
const fail = (text) => {
  $("#errors").textContent = text
}
const clearErrors = () => {
  $("#errors").textContent = ""
}

const decodeJwtSubject = (token) => {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")
    const claims = JSON.parse(atob(payload.padEnd(Math.ceil(payload.length / 4) * 4, "=")))
    return { sub: String(claims.sub ?? "?"), role: claims.role ?? null }
  } catch {
    return { sub: "?", role: null }
  }
}

class ApiFailure extends Error {
  constructor(status, code, message) {
    super(message)
    this.status = status
    this.code = code
  }
}

const api = async (method, path, body) => {
  const headers = { Authorization: `Bearer ${state.token}`, Accept: "application/json" }
  if (body !== undefined) headers["Content-Type"] = "application/json"
  let response
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store"
    })
  } catch (cause) {
    throw new ApiFailure(0, "network_error", `the API is unreachable (${cause.message})`)
  }
  const text = await response.text()
  let json = null
  try {
    json = text === "" ? null : JSON.parse(text)
  } catch {
    json = null
  }
  if (!response.ok) {
    const error = json && json.error ? json.error : { code: `http_${response.status}`, message: text.slice(0, 200) }
    if (response.status === 401) signOut(`Signed out: ${error.message}`)
    throw new ApiFailure(response.status, error.code, error.message)
  }
  return json
}

const describeError = (e) => (e instanceof ApiFailure ? `${e.message} (${e.code})` : String(e && e.message ? e.message : e))

const formatBytes = (n) => {
  if (n === null || n === undefined) return "?"
  const units = ["B", "KiB", "MiB", "GiB"]
  let i = 0
  let v = n
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024
    i++
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`
}

const formatWhen = (iso) => {
  if (!iso) return "—"
  const t = Date.parse(iso)
  if (Number.isNaN(t)) return iso
  const s = Math.round((t - Date.now()) / 1000)
  const abs = Math.abs(s)
  const rel = abs < 60 ? `${abs}s` : abs < 3600 ? `${Math.round(abs / 60)}min` : `${Math.round(abs / 3600)}h`
  return `${new Date(t).toLocaleTimeString()} (${s >= 0 ? "in " + rel : rel + " ago"})`
}

// ---------- sign in / out ----------

const signIn = async (token) => {
  state.token = token
  sessionStorage.setItem(TOKEN_KEY, token)
  const who = decodeJwtSubject(token)
  $("#user-id").textContent = who.role ? `${who.sub} (${who.role})` : who.sub
  $("#signin").hidden = true
  $("#account").hidden = false
  $("#servers-section").hidden = false
  clearErrors()
  await loadServers()
}

function signOut(reason) {
  sessionStorage.removeItem(TOKEN_KEY)
  state.token = null
  for (const entry of state.servers.values()) stopLive(entry)
  state.servers.clear()
  state.consoleHistory.clear()
  $("#servers").replaceChildren()
  $("#signin").hidden = false
  $("#account").hidden = true
  $("#servers-section").hidden = true
  $("#token").value = ""
  if (reason) fail(reason)
}

// ---------- servers ----------

const normaliseServerList = (json) => {
  const list = Array.isArray(json) ? json : Array.isArray(json?.servers) ? json.servers : []
  return list
    .map((s) => ({ ...s, id: String(s.id ?? s.serverId ?? s.vmid) }))
    .sort((a, b) => a.id.localeCompare(b.id, undefined, { numeric: true }))
}

const loadDevStackNotes = async () => {
  try {
    const response = await fetch("dev-stack.json", { cache: "no-store" })
    state.devStack = response.ok ? await response.json() : null
  } catch {
    state.devStack = null
  }
  const problems = Array.isArray(state.devStack?.problems) ? state.devStack.problems : []
  const section = $("#stack-notes")
  section.hidden = problems.length === 0
  $("ul", section).replaceChildren(
    ...problems.map((p) => {
      const li = document.createElement("li")
      li.textContent = String(p)
      return li
    })
  )
}

const loadServers = async () => {
  await loadDevStackNotes()
  let list
  try {
    list = normaliseServerList(await api("GET", "/api/servers"))
  } catch (e) {
    if (state.token !== null) fail(`Could not list servers: ${describeError(e)}`)
    return
  }
  for (const entry of state.servers.values()) stopLive(entry)
  state.servers.clear()
  const container = $("#servers")
  container.replaceChildren()
  $("#servers-empty").hidden = list.length > 0
  for (const record of list) {
    const card = buildCard(record)
    container.append(card)
    const entry = { record, status: record.status ?? null, card, stream: null, poll: null, console: null }
    state.servers.set(record.id, entry)
    if (record.kind === "game") setUpConsole(entry)
    render(entry)
    void refreshStatus(entry)
    startLive(entry)
  }
}

const buildCard = (record) => {
  const card = $("#server-template").content.firstElementChild.cloneNode(true)
  card.dataset.serverId = record.id
  card.dataset.kind = record.kind ?? "unknown"
  card.setAttribute("aria-label", `Server ${record.id}`)
  $(".server-name", card).textContent = `Server ${record.id}`
  $(".kind", card).textContent = record.kind === "dev" ? "dev container" : record.kind === "game" ? "game server" : String(record.kind ?? "?")
  const actions = $(".actions", card)
  if (record.kind === "dev") {
    const open = button("Open IDE", "open-ide", () => openIde(record.id))
    const why = $(".ide-unavailable", card)
    why.id = `ide-why-${record.id}`
    open.setAttribute("aria-describedby", why.id)
    actions.append(open)
  } else {
    actions.append(
      button("Start", "start", () => power(record.id, "start")),
      button("Stop", "stop", () => power(record.id, "stop")),
      button("Restart", "restart", () => power(record.id, "restart"))
    )
  }
  return card
}

const button = (label, action, onClick) => {
  const b = document.createElement("button")
  b.type = "button"
  b.textContent = label
  b.dataset.action = action
  b.addEventListener("click", onClick)
  return b
}

const fact = (dl, label, value) => {
  const dt = document.createElement("dt")
  dt.textContent = label
  const dd = document.createElement("dd")
  dd.textContent = value
  dl.append(dt, dd)
}

/** Whether Open IDE can work now, and if not, why (the agent's status first, then the dev stack's note). */
const ideAvailability = (entry) => {
  const s = entry.status
  const note = state.devStack?.ide
  if (s && s.online !== false && s.codeServerRunning) return { ok: true, reason: "" }
  if (note && note.available === false && note.reason) return { ok: false, reason: note.reason }
  if (!s || s.state === "unknown") return { ok: false, reason: "The container's agent has not reported yet." }
  if (s.online === false) return { ok: false, reason: "The container's agent is offline (no heartbeat for 30 s)." }
  if (s.install && s.install.phase === "failed") return { ok: false, reason: `Install failed: ${s.install.error ?? "unknown error"}` }
  if (!s.codeServerInstalled) return { ok: false, reason: "code-server is not installed in this container yet." }
  return { ok: false, reason: "code-server is not running in this container." }
}

const displayState = (entry) => {
  const s = entry.status
  if (!s) return "unknown"
  if (s.online === false && s.state !== "unknown") return `${s.state} (offline)`
  // A dev container has no game server: its workload is code-server.
  if (entry.record.kind === "dev" && (s.state === "idle" || s.state === "stopped")) {
    return s.codeServerRunning ? "running" : s.state
  }
  return s.state
}

const render = (entry) => {
  const { card, status: s, record } = entry
  const shown = displayState(entry)
  const stateEl = $(".state", card)
  stateEl.textContent = shown
  stateEl.dataset.state = shown.split(" ")[0]
  card.dataset.state = shown.split(" ")[0]
  const online = $(".online", card)
  online.textContent = s ? (s.online === false ? "offline" : "online") : ""
  $(".heartbeat", card).textContent =
    s && typeof s.heartbeatAgeMs === "number" ? `heartbeat ${Math.round(s.heartbeatAgeMs / 1000)} s ago` : ""

  const dl = $(".facts", card)
  dl.replaceChildren()
  fact(dl, "vmid", String(s?.vmid ?? record.vmid ?? "?"))
  if (record.kind === "dev") {
    fact(dl, "code-server", s ? `${s.codeServerInstalled ? "installed" : "not installed"}, ${s.codeServerRunning ? "running" : "not running"}` : "—")
    fact(dl, "workspace", s?.workspaceRoot ?? "—")
  } else {
    fact(dl, "server files", s?.serverRoot ?? "—")
    fact(dl, "restarts", String(s?.restartCount ?? 0))
    if (s?.nextRestartAt) fact(dl, "next restart", formatWhen(s.nextRestartAt))
    if (s?.resources && s.state === "running") {
      fact(dl, "memory", formatBytes(s.resources.memoryBytes))
      fact(dl, "uptime", `${Math.round(s.resources.uptimeSeconds)} s`)
    }
  }
  const runtimes = (s?.runtimes ?? []).map((r) => `${r.runtime} ${r.version}`).join(", ")
  fact(dl, "runtimes", runtimes || "none")
  fact(dl, "updated", formatWhen(s?.updatedAt))

  // Install progress.
  const install = $(".install", card)
  if (s?.install && s.install.phase !== "done") {
    install.hidden = false
    const i = s.install
    const total = i.bytesTotal ?? 0
    const progress = $(".install-progress", card)
    if (total > 0) {
      progress.max = total
      progress.value = i.bytesDone
    } else {
      progress.removeAttribute("value")
    }
    $(".install-label", card).textContent =
      `${i.runtime} ${i.version}: ${i.phase}` +
      (total > 0 ? ` ${formatBytes(i.bytesDone)} / ${formatBytes(total)}` : i.bytesDone ? ` ${formatBytes(i.bytesDone)}` : "") +
      (i.error ? ` (${i.error})` : "")
  } else {
    install.hidden = true
  }

  // Buttons.
  if (record.kind === "dev") {
    const availability = ideAvailability(entry)
    const open = $('[data-action="open-ide"]', card)
    open.disabled = !availability.ok
    const why = $(".ide-unavailable", card)
    why.hidden = availability.ok
    why.textContent = availability.ok ? "" : `IDE unavailable: ${availability.reason}`
  } else {
    const st = s?.state ?? "unknown"
    const busy = st === "starting" || st === "stopping"
    const installing = Boolean(s?.install && !["done", "failed"].includes(s.install.phase))
    $('[data-action="start"]', card).disabled = busy || installing || st === "running"
    $('[data-action="stop"]', card).disabled = busy || installing || ["stopped", "idle", "unknown"].includes(st)
    $('[data-action="restart"]', card).disabled = busy || installing || st !== "running"
  }

  // Last crash.
  const crash = $(".crash", card)
  const c = s?.lastCrash
  if (c) {
    crash.hidden = false
    $(".crash-classification", card).textContent = c.classification
    crash.dataset.classification = c.classification
    const how = c.signal ? `signal ${c.signal}` : `exit code ${c.exitCode}`
    $(".crash-summary", card).textContent =
      `${formatWhen(c.at)}: ${how} after ${(c.uptimeMs / 1000).toFixed(1)} s` +
      (c.earlyExit ? " — exited right after start: most likely a configuration or dependency problem." : "")
    $(".crash-evidence", card).textContent = c.evidence ? `Evidence: ${c.evidence}` : ""
    $(".crash-log", card).textContent = (c.logTail ?? []).join("\n") || "(no output)"
  } else {
    crash.hidden = true
  }
}

const refreshStatus = async (entry) => {
  try {
    entry.status = await api("GET", `/api/servers/${encodeURIComponent(entry.record.id)}/status`)
    render(entry)
  } catch (e) {
    if (state.token !== null) fail(`Status of server ${entry.record.id}: ${describeError(e)}`)
  }
}

// ---------- live status ----------

const startLive = (entry) => {
  entry.poll = setInterval(() => void refreshStatus(entry), POLL_MS)
  const controller = new AbortController()
  entry.stream = controller
  void readEvents(entry, controller.signal)
}

function stopLive(entry) {
  if (entry.stream) entry.stream.abort()
  entry.stream = null
  if (entry.poll) clearInterval(entry.poll)
  entry.poll = null
  if (entry.console) closeConsole(entry.console)
}

const applyEvent = (entry, data) => {
  let status
  try {
    status = JSON.parse(data)
  } catch {
    return
  }
  if (!status || typeof status !== "object" || typeof status.state !== "string") return
  // An event is by definition fresh: the agent just wrote it.
  entry.status = { ...entry.status, ...status, online: true, heartbeatAgeMs: 0 }
  render(entry)
}

/** Server-sent events over fetch (EventSource cannot send an Authorization header). */
const readEvents = async (entry, signal) => {
  let delay = 1000
  while (!signal.aborted && state.token !== null) {
    try {
      const response = await fetch(`/api/servers/${encodeURIComponent(entry.record.id)}/events`, {
        headers: { Authorization: `Bearer ${state.token}`, Accept: "text/event-stream" },
        cache: "no-store",
        signal
      })
      const type = response.headers.get("content-type") ?? ""
      if (!response.ok || !type.includes("text/event-stream") || response.body === null) {
        // No SSE here: fall back to polling at a faster rate.
        if (entry.poll) clearInterval(entry.poll)
        entry.poll = setInterval(() => void refreshStatus(entry), FALLBACK_POLL_MS)
        entry.card.dataset.live = "polling"
        return
      }
      entry.card.dataset.live = "events"
      delay = 1000
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader()
      let buffer = ""
      for (;;) {
        const { value, done } = await reader.read()
        if (done) break
        buffer += value.replace(/\r\n/g, "\n")
        let cut
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut)
          buffer = buffer.slice(cut + 2)
          const data = block
            .split("\n")
            .filter((line) => line.startsWith("data:"))
            .map((line) => line.slice(5).replace(/^ /, ""))
            .join("\n")
          if (data !== "") applyEvent(entry, data)
        }
      }
    } catch {
      if (signal.aborted) return
    }
    entry.card.dataset.live = "reconnecting"
    await new Promise((resolve) => setTimeout(resolve, delay))
    delay = Math.min(delay * 2, 15_000)
    void refreshStatus(entry)
  }
}

// ---------- live console ----------
//
// `GET /api/servers/:id/console` (docs/contracts.md "Console"): `hello`, then the last CONSOLE_TAIL
// events, then live `line` / `state` events, `dropped` when this connection fell behind. Every numbered
// event has an SSE id; after a network drop the pane reconnects with `Last-Event-ID` and gets exactly what
// it missed (or, when the agent restarted meanwhile, a fresh tail). Commands go to `POST …/console`.

const CONSOLE_TAIL = 200
/** Lines kept in a pane; older ones leave the page (the agent keeps its own ring). */
const CONSOLE_MAX_LINES = 2000
const CONSOLE_HISTORY_MAX = 100

const setUpConsole = (entry) => {
  const pane = $(".console", entry.card)
  pane.hidden = false
  const history = state.consoleHistory.get(entry.record.id) ?? []
  state.consoleHistory.set(entry.record.id, history)
  const c = {
    id: entry.record.id,
    pane,
    log: $(".console-log", pane),
    status: $(".console-status", pane),
    jump: $(".console-jump", pane),
    input: $(".console-input", pane),
    controller: null,
    lastId: null,
    follow: true,
    history,
    at: history.length,
    draft: ""
  }
  entry.console = c
  pane.addEventListener("toggle", () => {
    if (pane.open) openConsole(c)
    else closeConsole(c)
  })
  // Auto-scroll while the user is at the bottom; scrolling up stops it, scrolling back down resumes it.
  c.log.addEventListener("scroll", () => setFollow(c, c.log.scrollTop + c.log.clientHeight >= c.log.scrollHeight - 8))
  c.jump.addEventListener("click", () => {
    setFollow(c, true)
    c.log.scrollTop = c.log.scrollHeight
  })
  $(".console-form", pane).addEventListener("submit", (event) => {
    event.preventDefault()
    void sendCommand(c)
  })
  c.input.addEventListener("keydown", (event) => {
    if (event.key === "ArrowUp") {
      if (c.at === 0) return
      if (c.at === c.history.length) c.draft = c.input.value
      c.at--
    } else if (event.key === "ArrowDown") {
      if (c.at >= c.history.length) return
      c.at++
    } else {
      return
    }
    event.preventDefault()
    c.input.value = c.at === c.history.length ? c.draft : c.history[c.at]
    c.input.setSelectionRange(c.input.value.length, c.input.value.length)
  })
}

const setFollow = (c, follow) => {
  c.follow = follow
  c.log.dataset.follow = String(follow)
  c.jump.hidden = follow
}

const consoleStatus = (c, text, live) => {
  c.status.textContent = text === "" ? "" : `· ${text}`
  c.pane.dataset.live = live
}

const openConsole = (c) => {
  if (c.controller !== null) return
  c.controller = new AbortController()
  void readConsole(c, c.controller.signal)
}

function closeConsole(c) {
  if (c.controller !== null) c.controller.abort()
  c.controller = null
  consoleStatus(c, "", "closed")
}

/** A console row: always a text node (game output may contain anything, including markup). */
const consoleRow = (text, className, attrs) => {
  const row = document.createElement("div")
  row.className = className
  for (const [k, v] of Object.entries(attrs)) row.dataset[k] = v
  row.textContent = text
  return row
}

/** Appends rows in one go, keeps at most CONSOLE_MAX_LINES, and follows the newest when following. */
const appendRows = (c, rows) => {
  if (rows.length === 0) return
  c.log.append(...rows)
  const excess = c.log.childElementCount - CONSOLE_MAX_LINES
  for (let i = 0; i < excess; i++) c.log.firstElementChild.remove()
  if (c.follow) c.log.scrollTop = c.log.scrollHeight
}

const consoleNote = (c, text, kind) => appendRows(c, [consoleRow(text, "console-note", { kind })])

const droppedText = (d) =>
  d.reason === "resume_gap"
    ? `… ${d.count} event(s) missed while disconnected are no longer kept by the server …`
    : `… ${d.count} line(s) dropped: this connection fell behind …`

/** The rows for one SSE message (and what it changes in `c`). */
const consoleEvent = (c, id, event, data, rows) => {
  let d
  try {
    d = JSON.parse(data)
  } catch {
    return
  }
  if (event === "hello") {
    // A tail (first connect, or the agent restarted since our last id) replaces what the pane shows.
    if (d.mode !== "resume") {
      c.log.replaceChildren()
      rows.length = 0
      if (c.lastId !== null) rows.push(consoleRow("(the server's agent restarted: showing its last lines)", "console-note", { kind: "info" }))
    }
    c.pane.dataset.acceptsCommands = String(Boolean(d.acceptsCommands))
    c.pane.dataset.state = String(d.state)
    return
  }
  if (id !== undefined) c.lastId = id
  if (event === "line") {
    rows.push(consoleRow(String(d.text), "console-line", { source: d.source === "agent" ? "agent" : "game", seq: String(d.seq) }))
  } else if (event === "state") {
    c.pane.dataset.state = String(d.state)
    rows.push(consoleRow(`— server ${d.state} —`, "console-note", { kind: "state", seq: String(d.seq) }))
  } else if (event === "dropped") {
    rows.push(consoleRow(droppedText(d), "console-note", { kind: "dropped" }))
  }
}

const readConsole = async (c, signal) => {
  let delay = 1000
  while (!signal.aborted && state.token !== null) {
    consoleStatus(c, c.lastId === null ? "connecting…" : "reconnecting…", "connecting")
    try {
      const headers = { Authorization: `Bearer ${state.token}`, Accept: "text/event-stream" }
      if (c.lastId !== null) headers["Last-Event-ID"] = c.lastId
      const response = await fetch(`/api/servers/${encodeURIComponent(c.id)}/console?tail=${CONSOLE_TAIL}`, { headers, cache: "no-store", signal })
      if (!response.ok || response.body === null) {
        let error = { code: `http_${response.status}`, message: `the API answered ${response.status}` }
        try {
          error = (await response.json()).error ?? error
        } catch {
          // not JSON
        }
        if (response.status === 401) {
          signOut(`Signed out: ${error.message}`)
          return
        }
        consoleNote(c, `Console unavailable: ${error.message} (${error.code})`, "error")
        // Not allowed, not a game server, no such server: retrying will not help.
        if ([400, 403, 404, 409].includes(response.status)) {
          consoleStatus(c, "unavailable", "unavailable")
          c.controller = null
          return
        }
      } else {
        delay = 1000
        consoleStatus(c, "live", "live")
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader()
        let buffer = ""
        for (;;) {
          const { value, done } = await reader.read()
          if (done) break
          buffer += value.replace(/\r\n/g, "\n")
          const rows = []
          let cut
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, cut)
            buffer = buffer.slice(cut + 2)
            let id
            let event = "message"
            const data = []
            for (const line of block.split("\n")) {
              if (line.startsWith("id:")) id = line.slice(3).trim()
              else if (line.startsWith("event:")) event = line.slice(6).trim()
              else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""))
            }
            if (data.length > 0) consoleEvent(c, id, event, data.join("\n"), rows)
          }
          appendRows(c, rows)
        }
      }
    } catch {
      if (signal.aborted) return
    }
    if (signal.aborted) return
    consoleStatus(c, "reconnecting…", "reconnecting")
    await new Promise((resolve) => setTimeout(resolve, delay))
    delay = Math.min(delay * 2, 15_000)
  }
}

const sendCommand = async (c) => {
  const command = c.input.value
  if (command.trim() === "") return
  if (c.history.at(-1) !== command) c.history.push(command)
  if (c.history.length > CONSOLE_HISTORY_MAX) c.history.splice(0, c.history.length - CONSOLE_HISTORY_MAX)
  c.at = c.history.length
  c.draft = ""
  c.input.value = ""
  try {
    await api("POST", `/api/servers/${encodeURIComponent(c.id)}/console`, { command })
  } catch (e) {
    consoleNote(c, `Command not sent: ${describeError(e)}`, "error")
    if (c.input.value === "") c.input.value = command
  }
}

// ---------- actions ----------

const openIde = async (id) => {
  clearErrors()
  try {
    const { token, exchange } = await api("POST", `/api/dev/${encodeURIComponent(id)}/ide-token`)
    // Hand the token over in a form POST into a new top-level tab with no opener: the token never
    // appears in an address bar or history, and the IDE tab shares nothing with this page (no
    // window.opener, no copy of this tab's sessionStorage, where the user token lives). In host mode
    // the form goes to the IDE's own origin; the API accepts it because it comes from this origin.
    const form = document.createElement("form")
    form.method = "post"
    form.action = new URL(exchange.action, location.origin).href
    form.target = "_blank"
    form.rel = "noopener"
    form.hidden = true
    const field = document.createElement("input")
    field.type = "hidden"
    field.name = exchange.field
    field.value = token
    form.append(field)
    document.body.append(form)
    form.submit()
    form.remove()
    say(`Opened the IDE of server ${id} in a new tab.`)
  } catch (e) {
    fail(`Could not open the IDE of server ${id}: ${describeError(e)}`)
  }
}

const power = async (id, action) => {
  clearErrors()
  const entry = state.servers.get(id)
  try {
    const result = await api("POST", `/api/servers/${encodeURIComponent(id)}/power`, { action })
    say(`Server ${id}: ${action} requested.`)
    if (entry && result && typeof result === "object" && typeof result.state === "string") {
      entry.status = { ...entry.status, ...result }
      render(entry)
    } else if (entry) {
      void refreshStatus(entry)
    }
  } catch (e) {
    fail(`Could not ${action} server ${id}: ${describeError(e)}`)
  }
}

// ---------- boot ----------

$("#signin-form").addEventListener("submit", (event) => {
  event.preventDefault()
  const token = $("#token").value.trim()
  if (token !== "") void signIn(token)
})
$("#signout").addEventListener("click", () => signOut(""))
$("#refresh").addEventListener("click", () => void loadServers())
// Re-render relative times; pick up new notes from the dev stack (e.g. the IDE became available).
setInterval(() => {
  if (state.token !== null) void loadDevStackNotes()
  for (const entry of state.servers.values()) render(entry)
}, 5_000)

const saved = sessionStorage.getItem(TOKEN_KEY)
if (saved) void signIn(saved)
