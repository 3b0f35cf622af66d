// The SSH layer of mixz launch: resolve a plan host through ~/.ssh/config, check host keys against
// known_hosts, connect (agent, identity files), run one command per exec channel, probe all hosts.
export type {
    HostKeyCheck,
    HostKeyStatus,
    RemoteExecOptions,
    RemoteExit,
    RemoteProcess,
    SshConnectOptions,
    SshTarget,
    StrictHostKeyChecking
} from "./api.js";
export {buildRemoteCommand, kEnvNamePattern} from "./buildRemoteCommand.js";
export type {RemoteCommandSpec} from "./buildRemoteCommand.js";
export {hostKeyFingerprint, hostKeyType, KnownHosts, knownHostsName} from "./KnownHosts.js";
export type {KnownHostsEntry, KnownHostsProblem} from "./KnownHosts.js";
export {probeHosts} from "./probeHosts.js";
export {kDefaultIdentityFiles, resolveSshTarget} from "./resolveSshTarget.js";
export type {ResolveSshTargetOptions} from "./resolveSshTarget.js";
export {shellQuote, shellQuoteArgv} from "./shellQuote.js";
export {kDefaultConnectTimeoutMs, kDefaultKeepaliveCountMax, kDefaultKeepaliveIntervalMs, SshConnection} from "./SshConnection.js";
export {SshRemoteProcess} from "./SshRemoteProcess.js";
export {describeTarget, sshError} from "./sshError.js";
export type {SshFailureCause} from "./sshError.js";
