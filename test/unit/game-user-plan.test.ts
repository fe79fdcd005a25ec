import { assert, describe, it } from "@effect/vitest"
import { Option } from "effect"
import { planGameUser } from "../../agent/game/game-user.ts"
import { gameSettings } from "../support/game-settings.ts"

const gameUser = { name: "zlhgame", home: "/home/zlhgame" }

describe("who the game server runs as (GAME_RUN_AS, the agent's uid)", () => {
  it("a root agent without GAME_RUN_AS uses the dedicated game user, never root", () => {
    assert.deepStrictEqual(planGameUser({ runAs: Option.none(), agentUid: 0, agentGid: 0, gameUser }), { _tag: "game-user", ...gameUser })
  })

  it("root only when GAME_RUN_AS says root (or uid 0) explicitly", () => {
    for (const runAs of ["root", "0", "0:0"]) {
      const plan = planGameUser({ runAs: Option.some(runAs), agentUid: 0, agentGid: 0, gameUser })
      assert.strictEqual(plan._tag, "self")
      assert.strictEqual(plan._tag === "self" ? plan.source : undefined, "root")
    }
    assert.deepStrictEqual(planGameUser({ runAs: Option.some("minecraft"), agentUid: 0, agentGid: 0, gameUser }), { _tag: "explicit", runAs: "minecraft" })
    assert.deepStrictEqual(planGameUser({ runAs: Option.some("1000:1000"), agentUid: 0, agentGid: 0, gameUser }), { _tag: "explicit", runAs: "1000:1000" })
  })

  it("an agent that is not root runs the game as itself and says so (GAME_RUN_AS cannot be honoured)", () => {
    const plain = planGameUser({ runAs: Option.none(), agentUid: 1000, agentGid: 1000, gameUser })
    assert.deepInclude(plain, { _tag: "self", source: "agent", uid: 1000, gid: 1000 })
    assert.match(plain._tag === "self" ? plain.note : "", /does not run as root.*uid 1000/)
    const asked = planGameUser({ runAs: Option.some("minecraft"), agentUid: 1000, agentGid: 1000, gameUser })
    assert.match(asked._tag === "self" ? asked.note : "", /GAME_RUN_AS=minecraft is ignored/)
  })

  it("GAME_USER and GAME_HOME default to zlhgame and /home/zlhgame; both can be set", () => {
    assert.deepStrictEqual(gameSettings().gameUser, { name: "zlhgame", home: "/home/zlhgame" })
    assert.deepStrictEqual(gameSettings({ GAME_USER: "mc" }).gameUser, { name: "mc", home: "/home/mc" })
    assert.deepStrictEqual(gameSettings({ GAME_USER: "mc", GAME_HOME: "/srv/mc-home" }).gameUser, { name: "mc", home: "/srv/mc-home" })
    assert.throws(() => gameSettings({ GAME_USER: "Root; rm" }))
  })
})
