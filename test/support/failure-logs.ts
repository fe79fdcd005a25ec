/**
 * Output of the processes a test runs (agents, the dev stack), shown only when a test fails: a passing
 * test prints nothing. A harness registers each child's captured output while the child lives;
 * test/support/failure-logs-setup.ts prints the tail of every live one into a failing test's log.
 */
const sources = new Map<number, { readonly name: string; readonly read: () => string }>()
let nextId = 0

/** Shows `read()` with a failing test's output while registered; the returned function unregisters it. */
export const showOnFailure = (name: string, read: () => string): () => void => {
  const id = nextId++
  sources.set(id, { name, read })
  return () => {
    sources.delete(id)
  }
}

const TAIL_CHARS = 20_000

/** The tail of each registered output, as one block per source. */
export const failureLogs = (): Array<string> =>
  [...sources.values()].map(({ name, read }) => {
    const text = read()
    const tail = text.length > TAIL_CHARS ? `…${text.slice(-TAIL_CHARS)}` : text
    return `----- ${name} (output${text.length > TAIL_CHARS ? `, last ${TAIL_CHARS} characters` : ""}) -----\n${tail}`
  })
