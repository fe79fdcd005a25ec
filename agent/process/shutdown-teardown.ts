import { Cause, Exit, Runtime } from "effect"

/**
 * How a long-running agent process ends. `NodeRuntime.runMain` interrupts the program on SIGTERM/SIGINT
 * and, by default, exits 130 for an interruption: systemd (and every supervisor that treats non-zero as a
 * failure) would then count each ordinary `systemctl stop` as a crash. An interruption is how a graceful
 * shutdown ends here, so it exits 0 once every finalizer has run (the game server stopped, the final
 * status flushed to Redis); real failures keep the default exit code.
 */
export const shutdownTeardown: Runtime.Teardown = (exit, onExit) =>
  Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause) ? onExit(0) : Runtime.defaultTeardown(exit, onExit)
