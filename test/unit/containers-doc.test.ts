/**
 * docs/containers.md shows what scripts/lxc does: the nftables rules are `boundaryRules()` word for word
 * (with placeholders for the network's index and ports), the container configuration's fixed lines are
 * `baseConfig()`'s, and the template's package list is `TEMPLATE_PACKAGES`. A change to one without the
 * other fails here.
 */
import { readFileSync } from "node:fs"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import { boundaryRules } from "../../scripts/lxc/lxc-network.ts"
import { baseConfig, TEMPLATE_PACKAGES } from "../../scripts/lxc/lxc-template.ts"

const doc = readFileSync(join(import.meta.dirname, "..", "..", "docs", "containers.md"), "utf8")

describe("docs/containers.md matches scripts/lxc", () => {
  it("shows the boundary rules exactly as the code loads them", () => {
    const rules = boundaryRules({ index: 7, bridge: "zlhbr7", vethPrefix: "zv7h", nftTable: "zlh_br7", hostAddress: "10.213.7.1", allowTcpPorts: [1111, 2222] })
      .replace(/elements = \{ "zv7h10" \. 10\.213\.7\.10, .* "zv7h250" \. 10\.213\.7\.250 \}/, 'elements = { "zv<n>h10" . 10.213.<n>.10, …, "zv<n>h250" . 10.213.<n>.250 }')
      .replace(/elements = \{ "zv7h10" \. 02:00:0a:d5:07:0a, .* "zv7h250" \. 02:00:0a:d5:07:fa \}/, 'elements = { "zv<n>h10" . 02:00:0a:d5:<n>:0a, …, "zv<n>h250" . 02:00:0a:d5:<n>:fa }')
      .replaceAll("zlhbr7", "zlhbr<n>")
      .replaceAll("zv7h", "zv<n>h")
      .replaceAll("zlh_br7", "zlh_br<n>")
      .replaceAll("10.213.7.1", "10.213.<n>.1")
      .replace("1111, 2222", "<redis port>, <artifact port>")
    expect(doc).toContain(rules)
  })

  it("shows the unprivileged container configuration's fixed lines", () => {
    const fixed = baseConfig("dir:/x", "x").split("\n").filter((l) => /^lxc\.(include|idmap|mount\.auto)/.test(l))
    expect(fixed.length).toBe(5)
    for (const line of fixed) expect(doc).toContain(`\n${line}\n`)
  })

  it("lists the template's packages", () => {
    expect(doc).toContain(`--packages=${TEMPLATE_PACKAGES.join(",")}`)
  })
})
