import { Config, Schema } from "effect"

/**
 * What the container is for, which decides who owns `AgentStatus.state` (the contract: "its game
 * server, or code-server for a dev container"). `game` (default): the game supervisor. `dev`:
 * code-server; the game supervisor still answers its routes but leaves `state` alone.
 */
export const Workload = Schema.Literals(["game", "dev"])
export type Workload = typeof Workload.Type

export const workloadConfig: Config.Config<Workload> = Config.schema(Workload, "AGENT_WORKLOAD").pipe(Config.withDefault<Workload>("game"))

/** The one rule for who writes `AgentStatus.state`: the supervisor of the container's workload. */
export const ownsContainerState = (workload: Workload, supervisor: Workload): boolean => workload === supervisor
