/**
 * A tiny Prometheus registry (text exposition format 0.0.4), one per process: `GET /metrics` renders
 * it. Other parts update it through the exported `metrics` object, e.g. the IDE bridge calls
 * `metrics.ideWebSocketsOpen.inc()` / `.dec()` when a bridged WebSocket opens / closes.
 */

type Labels = Readonly<Record<string, string>>

const escapeLabel = (v: string) => v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"')
const labelKey = (names: ReadonlyArray<string>, labels: Labels) => names.map((n) => labels[n] ?? "").join("\u0000")
const renderLabels = (names: ReadonlyArray<string>, values: ReadonlyArray<string>, extra?: [string, string]) => {
  const parts = names.map((n, i) => `${n}="${escapeLabel(values[i] ?? "")}"`)
  if (extra !== undefined) parts.push(`${extra[0]}="${escapeLabel(extra[1])}"`)
  return parts.length === 0 ? "" : `{${parts.join(",")}}`
}
const num = (n: number) => (Number.isFinite(n) ? String(n) : n > 0 ? "+Inf" : n < 0 ? "-Inf" : "NaN")

interface Metric {
  readonly name: string
  render(): string
}

export class Counter implements Metric {
  readonly name: string
  readonly help: string
  readonly labelNames: ReadonlyArray<string>
  private readonly values = new Map<string, { labels: ReadonlyArray<string>; value: number }>()
  constructor(name: string, help: string, labelNames: ReadonlyArray<string> = []) {
    this.name = name
    this.help = help
    this.labelNames = labelNames
  }
  inc(labels: Labels = {}, by = 1): void {
    if (!(by >= 0)) return
    const key = labelKey(this.labelNames, labels)
    const cur = this.values.get(key)
    if (cur === undefined) this.values.set(key, { labels: this.labelNames.map((n) => labels[n] ?? ""), value: by })
    else cur.value += by
  }
  get(labels: Labels = {}): number {
    return this.values.get(labelKey(this.labelNames, labels))?.value ?? 0
  }
  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`]
    if (this.labelNames.length === 0 && this.values.size === 0) lines.push(`${this.name} 0`)
    for (const { labels, value } of this.values.values()) lines.push(`${this.name}${renderLabels(this.labelNames, labels)} ${num(value)}`)
    return lines.join("\n")
  }
}

export class Gauge implements Metric {
  readonly name: string
  readonly help: string
  private value = 0
  private collector: (() => number) | undefined
  constructor(name: string, help: string) {
    this.name = name
    this.help = help
  }
  inc(by = 1): void {
    this.value += by
  }
  dec(by = 1): void {
    this.value = Math.max(0, this.value - by)
  }
  set(v: number): void {
    this.value = v
  }
  /** Read the value from a callback at scrape time instead (e.g. a live connection count). */
  collect(fn: (() => number) | undefined): void {
    this.collector = fn
  }
  get(): number {
    if (this.collector !== undefined) {
      try {
        return this.collector()
      } catch {
        return this.value
      }
    }
    return this.value
  }
  render(): string {
    return [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} gauge`, `${this.name} ${num(this.get())}`].join("\n")
  }
}

export const DEFAULT_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

export class Histogram implements Metric {
  readonly name: string
  readonly help: string
  readonly labelNames: ReadonlyArray<string>
  readonly buckets: ReadonlyArray<number>
  private readonly series = new Map<string, { labels: ReadonlyArray<string>; counts: Array<number>; sum: number; count: number }>()
  constructor(name: string, help: string, labelNames: ReadonlyArray<string> = [], buckets: ReadonlyArray<number> = DEFAULT_BUCKETS) {
    this.name = name
    this.help = help
    this.labelNames = labelNames
    this.buckets = [...buckets].sort((a, b) => a - b)
  }
  observe(labels: Labels, value: number): void {
    if (!Number.isFinite(value)) return
    const key = labelKey(this.labelNames, labels)
    let s = this.series.get(key)
    if (s === undefined) {
      s = { labels: this.labelNames.map((n) => labels[n] ?? ""), counts: this.buckets.map(() => 0), sum: 0, count: 0 }
      this.series.set(key, s)
    }
    for (let i = 0; i < this.buckets.length; i++) if (value <= this.buckets[i]!) s.counts[i]!++
    s.sum += value
    s.count++
  }
  count(labels: Labels = {}): number {
    return this.series.get(labelKey(this.labelNames, labels))?.count ?? 0
  }
  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`]
    for (const s of this.series.values()) {
      this.buckets.forEach((b, i) => lines.push(`${this.name}_bucket${renderLabels(this.labelNames, s.labels, ["le", num(b)])} ${s.counts[i]}`))
      lines.push(`${this.name}_bucket${renderLabels(this.labelNames, s.labels, ["le", "+Inf"])} ${s.count}`)
      lines.push(`${this.name}_sum${renderLabels(this.labelNames, s.labels)} ${num(s.sum)}`)
      lines.push(`${this.name}_count${renderLabels(this.labelNames, s.labels)} ${s.count}`)
    }
    return lines.join("\n")
  }
}

export const metrics = {
  httpRequests: new Counter("zlh_http_requests_total", "HTTP requests answered by the API, by route pattern and status.", ["method", "route", "status"]),
  httpDuration: new Histogram("zlh_http_request_duration_seconds", "Time to answer an HTTP request (until the response headers), by route pattern.", ["method", "route", "status"]),
  /** The IDE bridge: `inc()` when a bridged WebSocket opens, `dec()` when it closes. */
  ideWebSocketsOpen: new Gauge("zlh_ide_websockets_open", "IDE WebSockets currently bridged by this process."),
  eventStreamsOpen: new Gauge("zlh_event_streams_open", "Live status streams (GET /api/servers/:id/events) currently open."),
  consoleStreamsOpen: new Gauge("zlh_console_streams_open", "Game console streams (GET /api/servers/:id/console) currently open."),
  redisErrors: new Counter("zlh_redis_errors_total", "Redis errors seen by the API (connection errors and failed commands).", ["client"]),
  ready: new Gauge("zlh_api_ready", "1 while this process can run the Redis commands its requests need (the /readyz probe, api/readiness.ts), else 0."),
  notReadySeconds: new Counter("zlh_api_not_ready_seconds_total", "Seconds this process spent not ready (the /readyz probe failing)."),
  degraded: new Gauge("zlh_api_degraded", "1 while this process is ready but a Redis master has fewer replicas than REDIS_WAIT_REPLICAS, so IDE token exchanges are refused (503 redis_replicas_unavailable), else 0."),
  degradedSeconds: new Counter("zlh_api_degraded_seconds_total", "Seconds this process spent ready but degraded (too few Redis replicas for single-use IDE tokens)."),
  ideRequests: new Counter(
    "zlh_ide_requests_total",
    "IDE requests by outcome: proxied (code-server answered), upstream_error (502/504 answered), offline (the IDE was not running), refused (the proxy's own 4xx).",
    ["outcome"]
  ),
  ideTokensIssued: new Counter("zlh_ide_tokens_issued_total", "IDE tokens issued."),
  rateLimited: new Counter("zlh_rate_limited_total", "Requests refused by a rate limit.", ["limit"])
}

const all = (): ReadonlyArray<Metric> => Object.values(metrics)

export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

export const renderMetrics = (): string => `${all().map((m) => m.render()).join("\n")}\n`
