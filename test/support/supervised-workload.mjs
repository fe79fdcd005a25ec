// A stand-in workload for the supervision core's suite (test/support/supervised-process-suite.ts).
// Run as `node supervised-workload.mjs … --bind-addr host:port … --user-data-dir <dir> …` (code-server's shape).
// Exits 1 at once while <dir>/crash exists; otherwise starts a child in its own process group, writes
// its PID to <dir>/child.pid, prints "ready" and listens on the port; a `stop` line on stdin exits 0, and
// SIGTERM is logged before exiting (the child, in the same group, gets it too).
import * as fs from "node:fs"
import * as net from "node:net"
import { spawn } from "node:child_process"
import * as readline from "node:readline"

const arg = (name) => process.argv[process.argv.indexOf(name) + 1]
const dir = arg("--user-data-dir")
if (fs.existsSync(`${dir}/crash`)) {
  console.log("crashing as asked")
  process.exit(1)
}
const [host, port] = arg("--bind-addr").split(/:(?=\d+$)/)
const child = spawn("sleep", ["1000"], { stdio: "ignore" })
fs.writeFileSync(`${dir}/child.pid`, String(child.pid))
const server = net.createServer((s) => s.end())
server.listen(Number(port), host, () => console.log("ready"))
process.on("SIGTERM", () => {
  console.log("got SIGTERM")
  process.exit(143)
})
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  if (line.trim() === "stop") {
    console.log("stop command")
    child.kill("SIGTERM")
    process.exit(0)
  }
})
