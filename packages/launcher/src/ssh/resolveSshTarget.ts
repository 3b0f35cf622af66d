import {existsSync, readFileSync} from "node:fs";
import {homedir, hostname, userInfo} from "node:os";
import {isAbsolute, join, resolve} from "node:path";
import SSHConfig from "ssh-config";
import {ErrorCodes, MixzError} from "@mixz/protocol";
import type {SshTarget, StrictHostKeyChecking} from "./api.js";

export interface ResolveSshTargetOptions {
    /** --ssh-port: overrides the config's Port for every host. */
    readonly sshPort?: number;
    /** The OpenSSH client config; default `<homeDir>/.ssh/config`. A missing file is an empty config. */
    readonly configPath?: string;
    /** The local home directory for `~`, `%d` and the default key and known_hosts paths; default os.homedir(). */
    readonly homeDir?: string;
    /**
     * Read-only known_hosts files consulted after the user's (config GlobalKnownHostsFile overrides);
     * default OpenSSH's `/etc/ssh/ssh_known_hosts`, `/etc/ssh/ssh_known_hosts2`. Tests pass [].
     */
    readonly globalKnownHostsFiles?: readonly string[];
}

/** Keys tried when the config names no IdentityFile, in this order, if they exist. */
export const kDefaultIdentityFiles = ["id_ed25519", "id_ecdsa", "id_rsa"] as const;
const kDefaultGlobalKnownHosts = ["/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"] as const;

/**
 * How `host` (a name of the plan) is reached over SSH, following ~/.ssh/config as `ssh host` would
 * for the options mixz uses: HostName, Port, User, IdentityFile, UserKnownHostsFile,
 * GlobalKnownHostsFile, HostKeyAlias, StrictHostKeyChecking. The config is evaluated by the
 * `ssh-config` package (Host and Match blocks, first value wins, IdentityFile accumulates).
 *
 * Port precedence: `--ssh-port` (options.sshPort, applied to every host as DeepSpeed's --ssh_port
 * is) beats the config's Port, which beats 22.
 *
 * Not followed: `Include` (the `ssh-config` package does not expand it), ProxyJump/ProxyCommand,
 * IdentityAgent, IdentitiesOnly, CertificateFile. `Match exec` commands run, as they would for ssh.
 */
export function resolveSshTarget(host: string, options: ResolveSshTargetOptions = {}): SshTarget {
    const home = options.homeDir ?? homedir();
    const configPath = options.configPath ?? join(home, ".ssh", "config");
    const values = readConfig(configPath).compute(host, {ignoreCase: true});
    const first = (key: string): string | undefined => {
        const value = values[key];
        return Array.isArray(value) ? value[0] : value;
    };
    const all = (key: string): string[] => {
        const value = values[key];
        return value === undefined ? [] : Array.isArray(value) ? value : [value];
    };
    const where = (directive: string): string => `${configPath}: Host ${host}: ${directive}`;

    const hostName = expandTokens(first("hostname") ?? host, {h: host, n: host, "%": "%"}, where("HostName"));
    const port = options.sshPort !== undefined ? checkSshPortOption(options.sshPort) : parseConfigPort(first("port"), where("Port"));
    const user = first("user") ?? localUserName();
    const tokens: Tokens = {
        "%": "%",
        d: home,
        u: localUserName(),
        h: hostName,
        n: host,
        r: user,
        p: String(port),
        l: hostname(),
        L: hostname().split(".")[0] ?? hostname(),
        i: String(userInfo().uid)
    };
    const toPath = (value: string, directive: string): string => {
        const expanded = expandTokens(expandTilde(value, home), tokens, where(directive));
        return isAbsolute(expanded) ? expanded : resolve(expanded);
    };

    const configured = all("identityfile");
    const identityFiles = configured.length > 0
        ? configured.filter((file) => file.toLowerCase() !== "none").map((file) => toPath(file, "IdentityFile"))
        : kDefaultIdentityFiles.map((name) => join(home, ".ssh", name)).filter((file) => existsSync(file));

    const userKnownHosts = all("userknownhostsfile");
    const globalKnownHosts = all("globalknownhostsfile");
    const knownHostsFiles = [
        ...(userKnownHosts.length > 0
            ? userKnownHosts.filter((file) => file.toLowerCase() !== "none").map((file) => toPath(file, "UserKnownHostsFile"))
            : [join(home, ".ssh", "known_hosts"), join(home, ".ssh", "known_hosts2")]),
        ...(globalKnownHosts.length > 0
            ? globalKnownHosts.filter((file) => file.toLowerCase() !== "none").map((file) => toPath(file, "GlobalKnownHostsFile"))
            : options.globalKnownHostsFiles ?? kDefaultGlobalKnownHosts)
    ];

    const alias = first("hostkeyalias");
    const strict = first("stricthostkeychecking");
    return {
        host,
        hostName,
        port,
        user,
        identityFiles,
        knownHostsFiles,
        ...(alias !== undefined ? {hostKeyAlias: alias} : {}),
        ...(strict !== undefined ? {strictHostKeyChecking: parseStrictHostKeyChecking(strict, where("StrictHostKeyChecking"))} : {})
    };
}

function readConfig(path: string): SSHConfig {
    let text: string;
    try {
        text = readFileSync(path, "utf8");
    } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (code === "ENOENT" || code === "ENOTDIR") return new SSHConfig();
        throw new MixzError(ErrorCodes.fileRead, `${path}: cannot read the SSH config: ${code ?? String(error)}`, {category: "user", context: {file: path}, cause: error});
    }
    try {
        return SSHConfig.parse(text);
    } catch (error) {
        throw new MixzError(ErrorCodes.ssh, `${path}: cannot parse the SSH config: ${error instanceof Error ? error.message : String(error)}`, {
            category: "user",
            context: {file: path, cause: "config"},
            cause: error
        });
    }
}

function localUserName(): string {
    try {
        return userInfo().username;
    } catch {
        // os.userInfo() throws when the uid has no passwd entry (containers); ssh would fail there too.
        return process.env["USER"] ?? process.env["LOGNAME"] ?? "root";
    }
}

function checkSshPortOption(port: number): number {
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
        throw new MixzError(ErrorCodes.usage, `--ssh-port: expected a port number from 1 to 65535, got ${port}`, {category: "user", context: {path: "--ssh-port"}});
    }
    return port;
}

function parseConfigPort(value: string | undefined, where: string): number {
    if (value === undefined) return 22;
    const port = /^\d{1,5}$/.test(value) ? Number(value) : Number.NaN;
    if (!(port >= 1 && port <= 65535)) {
        throw new MixzError(ErrorCodes.ssh, `${where}: ${JSON.stringify(value)} is not a port number`, {category: "user", context: {cause: "config"}});
    }
    return port;
}

function parseStrictHostKeyChecking(value: string, where: string): StrictHostKeyChecking {
    switch (value.toLowerCase()) {
        case "yes":
        case "true":
            return "yes";
        case "no":
        case "off":
        case "false":
            return "no";
        case "ask":
            return "ask";
        case "accept-new":
            return "accept-new";
        default:
            throw new MixzError(ErrorCodes.ssh, `${where}: unknown value ${JSON.stringify(value)} (yes, no, ask, accept-new, off)`, {
                category: "user",
                context: {cause: "config"}
            });
    }
}

type Tokens = Readonly<Record<string, string>>;

function expandTilde(value: string, home: string): string {
    if (value === "~") return home;
    if (value.startsWith("~/")) return join(home, value.slice(2));
    return value;
}

/** OpenSSH's percent_expand: `%x` for the tokens given, `%%` for `%`; any other token is an error, as in ssh. */
function expandTokens(value: string, tokens: Tokens, where: string): string {
    return value.replace(/%(.?)/gs, (whole, token: string) => {
        const replacement = tokens[token];
        if (replacement === undefined) {
            throw new MixzError(ErrorCodes.ssh, `${where}: ${JSON.stringify(value)}: unsupported token ${JSON.stringify(whole)}`, {
                category: "user",
                context: {cause: "config"}
            });
        }
        return replacement;
    });
}
