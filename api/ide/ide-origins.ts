/**
 * Where each server's IDE lives in the browser: on its own origin (host mode, IDE_ORIGIN_TEMPLATE such as
 * `https://{id}.ide.example.com`) or under `/api/dev/<id>/ide/` on the API's origin (path mode, the
 * template unset). Host mode is the production setting: every IDE's scripts, extensions and webviews
 * run on an origin of their own, so nothing one IDE runs can read another IDE or the portal.
 */
import type { ApiConfig } from "../deps.ts"

/** A server id that can be the first label of an IDE hostname (browsers lowercase hostnames). */
const HOST_LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/

export const ideOriginTemplateProblem = (template: string): string | undefined => {
  if (!template.includes("://{id}.")) return "must look like https://{id}.ide.example.com ({id} as the first label of the host)"
  let url: URL
  try {
    url = new URL(template.replace("{id}", "x"))
  } catch {
    return "is not a URL once {id} is filled in"
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") return "must be an http:// or https:// origin"
  if ((url.pathname !== "/" && url.pathname !== "") || url.search !== "" || url.hash !== "" || url.username !== "") {
    return "must be an origin only (scheme://{id}.host[:port]), without path, query or credentials"
  }
  if (template.indexOf("{id}") !== template.lastIndexOf("{id}")) return "must contain {id} once"
  return undefined
}

export interface IdeOrigins {
  readonly mode: "host" | "path"
  /** Host mode: `https:` IDE origins (cookies get `Secure` and the `__Host-` prefix). */
  readonly secure: boolean
  /** Host mode: the server id a `Host` header names, or undefined when it is not an IDE host. */
  serverIdOfHost(host: string | undefined): string | undefined
  /** Host mode: the IDE origin of a server (`https://100.ide.example.com`); undefined if its id cannot be a hostname label. */
  originOf(serverId: string): string | undefined
  /** Host mode: the CSP source that matches every IDE origin (`https://*.ide.example.com`). */
  readonly wildcardSource: string | undefined
}

export const PATH_MODE: IdeOrigins = {
  mode: "path",
  secure: false,
  serverIdOfHost: () => undefined,
  originOf: () => undefined,
  wildcardSource: undefined
}

export const createIdeOrigins = (config: Pick<ApiConfig, "ideOriginTemplate">): IdeOrigins => {
  const template = config.ideOriginTemplate
  if (template === undefined) return PATH_MODE
  const sample = new URL(template.replace("{id}", "x"))
  const scheme = sample.protocol
  // `.ide.example.com` and the explicit port, if any.
  const suffix = sample.hostname.slice(1)
  const port = sample.port
  const hostOf = (label: string) => `${label}${suffix}${port === "" ? "" : `:${port}`}`
  return {
    mode: "host",
    secure: scheme === "https:",
    serverIdOfHost(host) {
      if (host === undefined) return undefined
      let h = host.toLowerCase()
      const colon = h.lastIndexOf(":")
      if (colon > 0 && !h.endsWith("]")) h = h.slice(0, colon)
      if (!h.endsWith(suffix)) return undefined
      const label = h.slice(0, h.length - suffix.length)
      return HOST_LABEL.test(label) ? label : undefined
    },
    originOf: (serverId) => (HOST_LABEL.test(serverId) ? `${scheme}//${hostOf(serverId)}` : undefined),
    wildcardSource: `${scheme}//*${suffix}${port === "" ? "" : `:${port}`}`
  }
}
