/** The IDE session cookie (HttpOnly, `Path=/api/dev/<id>/ide/`). */
export const IDE_COOKIE_NAME = "zlh_ide"
/** Default IDE session lifetime when the config does not say (12 h). */
export const DEFAULT_IDE_SESSION_TTL_SECONDS = 12 * 60 * 60
/** How long a verified cookie is trusted from memory before it is re-checked against Redis revocations. */
export const SESSION_RECHECK_MS = 30_000
/** How long a registry record is reused from memory. */
export const RECORD_CACHE_MS = 5_000
export const DEFAULT_SESSION_CACHE_SIZE = 50_000
/** Upstream must answer (headers) within this time, else 504. */
export const DEFAULT_UPSTREAM_TIMEOUT_MS = 30_000
