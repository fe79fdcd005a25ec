/**
 * The agent's one rule for running a child as another user, and the one PATH its children start from.
 *
 * The agent (root) switches with `setpriv`, which sets real and effective uid/gid and the supplementary
 * groups, then execs the command in place (same PID, so a detached child still leads its own process
 * group). Node's `uid`/`gid` spawn options drop supplementary groups instead of initialising them, and
 * Effect's ChildProcess has no such option. `no_new_privs` is always set: nothing the child starts (a
 * setuid binary such as sudo or su) can gain privileges again; this holds for the game, code-server and
 * its terminals, `POST /dev/exec` and the files helper alike (checked in /proc/<pid>/status by
 * test/integration/game-user.test.ts, dev-exec.test.ts and dev-code-server.test.ts).
 */

/** Whose rights a child runs with. `groups`: the user's own from /etc/group, none, or exactly these. */
export interface RunAs {
  readonly uid: number
  readonly gid: number
  readonly groups: "init" | "clear" | ReadonlyArray<number>
}

/** `setpriv` arguments ending in `--`: the command and its arguments follow. */
const setprivArgs = (who: RunAs): Array<string> => [
  `--reuid=${who.uid}`,
  `--regid=${who.gid}`,
  who.groups === "init"
    ? "--init-groups"
    : who.groups === "clear" || who.groups.length === 0
    ? "--clear-groups"
    : `--groups=${[...new Set(who.groups)].join(",")}`,
  "--no-new-privs",
  "--"
]

/** The command line that runs `command args` as `who` (setpriv execs it in place); as the agent when `who` is undefined. */
export const runAsCommandLine = (
  who: RunAs | undefined,
  command: string,
  args: ReadonlyArray<string>
): readonly [string, ReadonlyArray<string>] => (who === undefined ? [command, args] : ["setpriv", [...setprivArgs(who), command, ...args]])

/** The system directories every child's PATH ends with. */
export const SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/** A child's PATH: `first` (an installed runtime's bin, …), then the system directories. */
export const childPath = (first: ReadonlyArray<string> = []): string => [...first, SYSTEM_PATH].join(":")
