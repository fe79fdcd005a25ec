import { SYSTEM_PATH } from "./run-as.ts"

/**
 * The environment of the agent's own helper commands (installer scripts, useradd, id): built from an
 * allow-list, never inherited. The agent's environment holds its Redis credentials and whatever else the
 * operator put there; none of it reaches a child (docs/contracts.md "Secrets").
 */
const PASSED_THROUGH = [
  "PATH",
  "LANG",
  "LC_ALL",
  "TZ",
  "HOME",
  // Downloads by installer scripts go through the operator's proxy and trust its CA.
  "http_proxy",
  "https_proxy",
  "no_proxy",
  "HTTP_PROXY",
  "HTTPS_PROXY",
  "NO_PROXY",
  "SSL_CERT_FILE",
  "SSL_CERT_DIR"
] as const


export const commandEnvironment = (
  extra: Readonly<Record<string, string>> = {},
  from: Readonly<Record<string, string | undefined>> = process.env
): Record<string, string> => {
  const env: Record<string, string> = { PATH: SYSTEM_PATH, LANG: "C.UTF-8" }
  for (const name of PASSED_THROUGH) {
    const value = from[name]
    if (value !== undefined && value !== "") env[name] = value
  }
  return { ...env, ...extra }
}
