// The files helper: runs as the owner of a file tree (DEV_USER for the workspace), never as root, and
// performs one file operation per request. The agent (root) resolves and checks every path first; this
// process then touches the disk with the owner's rights only, so a path swapped between the agent's check
// and the use here (a directory replaced by a symlink to a root-only place) can reach nothing the owner
// could not reach with a shell of their own. A final symlink is never followed (O_NOFOLLOW, lstat, rename
// and rm act on the link itself).
//
// Protocol: one JSON request per line on stdin {id, op, ...}, one JSON reply per line on stdout:
// {id, ok: true, result} or {id, ok: false, code, message, path?}. Bytes travel base64-encoded.
// Plain JavaScript with node: imports only: the agent passes this text to `node -e`, so it needs no file
// or module the owner can read.
import { randomBytes } from "node:crypto"
import { constants as C } from "node:fs"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { createInterface } from "node:readline"

process.umask(0o022)

const fail = (code, extra = {}) => Object.assign(new Error(code), { code, ...extra })
const kind = (st) => (st.isSymbolicLink() ? "symlink" : st.isDirectory() ? "directory" : st.isFile() ? "file" : "other")
const octal = (mode) => (mode & 0o7777).toString(8).padStart(4, "0")
const tempName = (name) => `.${name.slice(0, 200)}.zlh-tmp-${randomBytes(6).toString("hex")}`
const lstatOrNull = (p) =>
  fs.lstat(p).catch((e) => {
    if (e.code === "ENOENT" || e.code === "ENOTDIR") return null
    throw e
  })

const parentDir = async (p) => {
  const parent = await lstatOrNull(path.dirname(p))
  if (parent === null) throw fail("ENOENT_PARENT")
  if (!parent.isDirectory()) throw fail("ENOTDIR_PARENT")
}

const ops = {
  async list({ path: p, max }) {
    const st = await lstatOrNull(p)
    if (st === null) throw fail("ENOENT")
    if (!st.isDirectory()) throw fail("ENOTDIR")
    const names = (await fs.readdir(p)).sort()
    const entries = []
    for (const name of names.slice(0, max)) {
      const e = await lstatOrNull(path.join(p, name))
      if (e === null) continue // removed meanwhile
      entries.push({ name, type: kind(e), size: e.size, mtime: e.mtime.toISOString(), mode: octal(e.mode) })
    }
    return { entries, truncated: names.length > max }
  },

  async read({ path: p, max }) {
    const handle = await fs.open(p, C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK)
    try {
      const st = await handle.stat()
      if (st.isDirectory()) throw fail("EISDIR")
      if (!st.isFile()) throw fail("ENOTREG")
      if (st.size > max) throw fail("E2BIG")
      const bytes = await handle.readFile()
      if (bytes.length > max) throw fail("E2BIG")
      return { data: bytes.toString("base64"), mtime: st.mtime.toISOString() }
    } finally {
      await handle.close()
    }
  },

  // A temporary file beside the target, fsynced and renamed over it: readers see the old or the new content.
  async write({ path: p, data }) {
    await parentDir(p)
    const existing = await lstatOrNull(p)
    if (existing?.isDirectory()) throw fail("EISDIR")
    const mode = existing?.isFile() ? existing.mode & 0o7777 : 0o644
    const temp = path.join(path.dirname(p), tempName(path.basename(p)))
    const handle = await fs.open(temp, C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, 0o600)
    try {
      await handle.write(Buffer.from(data, "base64"))
      await handle.chmod(mode)
      await handle.sync()
      await handle.close()
      await fs.rename(temp, p)
    } catch (e) {
      await handle.close().catch(() => undefined)
      await fs.rm(temp, { force: true })
      throw e
    }
    return { created: existing === null }
  },

  // `path` with its missing ancestors down from `root` (only the last one unless `parents`).
  async mkdir({ path: p, root, parents }) {
    const existing = await lstatOrNull(p)
    if (existing !== null) {
      if (existing.isDirectory() && parents) return { created: false }
      throw fail("EEXIST")
    }
    const missing = []
    let current = p
    while (current !== root && current !== path.dirname(current) && (await lstatOrNull(current)) === null) {
      missing.unshift(current)
      current = path.dirname(current)
    }
    if (missing.length > 1 && !parents) throw fail("ENOENT_PARENT")
    const base = await lstatOrNull(current)
    if (base === null || !base.isDirectory()) throw fail("ENOTDIR_AT", { path: current })
    for (const dir of missing) await fs.mkdir(dir, { mode: 0o755 })
    return { created: true }
  },

  async move({ from, to, overwrite }) {
    const source = await lstatOrNull(from)
    if (source === null) throw fail("ENOENT")
    await parentDir(to)
    const existing = await lstatOrNull(to)
    if (existing !== null && !overwrite) throw fail("EEXIST")
    if (existing !== null && existing.isDirectory() !== source.isDirectory()) throw fail(existing.isDirectory() ? "EISDIR" : "ENOTDIR")
    if (existing?.isDirectory()) await fs.rm(to, { recursive: true })
    await fs.rename(from, to)
    return {}
  },

  async remove({ path: p }) {
    if ((await lstatOrNull(p)) === null) throw fail("ENOENT")
    await fs.rm(p, { recursive: true })
    return {}
  },

  // An extracted upload (staged by the agent, already owned by this user) into place: `to` must be
  // missing or an empty directory. What is left of `from` is removed afterwards (the agent removes the
  // then empty staging directory: its parent is root's).
  async place({ from, to }) {
    try {
      await parentDir(to)
      const existing = await lstatOrNull(to)
      if (existing !== null) {
        if (!existing.isDirectory() || (await fs.readdir(to)).length > 0) throw fail("EEXIST")
        await fs.rmdir(to)
      }
      try {
        await fs.rename(from, to)
      } catch (e) {
        if (e.code !== "EXDEV") throw e
        await fs.cp(from, to, { recursive: true, errorOnExist: true, force: false, verbatimSymlinks: true })
      }
      return {}
    } finally {
      await fs.rm(from, { recursive: true, force: true })
    }
  }
}

const reply = (message) => process.stdout.write(`${JSON.stringify(message)}\n`)

createInterface({ input: process.stdin, crlfDelay: Infinity }).on("line", (line) => {
  let request
  try {
    request = JSON.parse(line)
  } catch {
    return
  }
  const op = Object.hasOwn(ops, request.op) ? ops[request.op] : undefined
  if (op === undefined) return reply({ id: request.id, ok: false, code: "EBADOP", message: `unknown operation ${request.op}` })
  op(request).then(
    (result) => reply({ id: request.id, ok: true, result }),
    (e) => reply({ id: request.id, ok: false, code: String(e?.code ?? "EIO"), message: String(e?.message ?? e), ...(e?.path ? { path: e.path } : {}) })
  )
})
