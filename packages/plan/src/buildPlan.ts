import {hostname} from "node:os";
import {ErrorCodes, InputError, wholeNumberProblem, type Problem} from "@mixz/protocol";
import type {Hostfile} from "./hostfile.js";
import {localHostPredicate} from "./localHostPredicate.js";
import {applyResourceFilter, parseResourceFilter, type SelectedHost} from "./resourceFilter.js";
import {kDefaultMasterPort, type PlanNode, type WorldPlan} from "./WorldPlan.js";

/** What the user asked for: the launcher's resource flags, already parsed as numbers. */
export interface PlanRequest {
    /** The parsed `--hostfile`; absent for a run on this machine only. */
    readonly hostfile?: Hostfile;
    /** `--nproc N`: ranks on this machine when there is no hostfile. */
    readonly nproc?: number;
    readonly include?: string;
    readonly exclude?: string;
    /** `--num_nodes N`: keep the first N hosts. */
    readonly numNodes?: number;
    /** `--num_gpus G`: use slots 0…G−1 of every host. */
    readonly numGpus?: number;
    readonly masterAddr?: string;
    readonly masterPort?: number;
    /** Reach even local hosts through SSH (tests use this to exercise the SSH path). */
    readonly forceSsh?: boolean;
}

/** The parts of the environment a plan depends on, injectable so that planning stays pure in tests. */
export interface PlanEnvironment {
    readonly isLocal: (host: string) => boolean;
    /** The launcher machine's name, which remote ranks dial when no --master-addr is given. */
    readonly launcherHost: string;
}

const kMaxRanks = 65536;
/** Slots a hostfile may offer in total before filtering; more is surely a generated mistake. */
const kMaxPoolSlots = 1 << 20;

/**
 * Turns the resource flags into the world: nodes in hostfile order, global ranks node by node,
 * LOCAL_RANK = index of the slot in its node's list. Follows DeepSpeed's runner where it is
 * right and its intended semantics where it is buggy (launchers.md §1b, §1i). Every problem found
 * is reported at once; nothing here starts a process.
 */
export function buildPlan(request: PlanRequest, environment: PlanEnvironment = defaultPlanEnvironment()): WorldPlan {
    const problems: Problem[] = [];
    const usage = (path: string, message: string): void => {
        problems.push({code: ErrorCodes.usage, path, message});
    };
    const {hostfile, include, exclude} = request;
    checkCount(request.nproc, "--nproc", kMaxRanks, usage);
    checkCount(request.numNodes, "--num_nodes", kMaxRanks, usage);
    checkCount(request.numGpus, "--num_gpus", kMaxRanks, usage);
    if (request.masterPort !== undefined && !(Number.isInteger(request.masterPort) && request.masterPort >= 0 && request.masterPort <= 65535)) {
        usage("--master-port", `${request.masterPort} is not a port number (0-65535; 0 picks a free port)`);
    }
    if (request.masterAddr !== undefined && request.masterAddr.trim() === "") usage("--master-addr", "is empty");
    if (include !== undefined && exclude !== undefined) {
        usage("--include", "--include and --exclude are mutually exclusive; use one");
    }
    if ((include !== undefined || exclude !== undefined) && (request.numNodes !== undefined || request.numGpus !== undefined)) {
        usage(
            request.numNodes !== undefined ? "--num_nodes" : "--num_gpus",
            "Cannot specify --num_nodes/--num_gpus with --include/--exclude; select hosts and slots one way"
        );
    }
    if (hostfile !== undefined && request.nproc !== undefined) {
        usage("--nproc", "is for runs without --hostfile; set slots=N in the hostfile or use --num_gpus");
    }
    if (hostfile === undefined && request.nproc !== undefined && request.numGpus !== undefined) {
        usage("--nproc", "--nproc and --num_gpus both set the number of local ranks; use one");
    }
    if (hostfile === undefined && request.numNodes !== undefined && request.numNodes > 1) {
        usage("--num_nodes", `Num nodes is ${request.numNodes} but no extra nodes are available without --hostfile`);
    }
    if (problems.length > 0) throw new InputError(problems);

    // The pool: every host with all its slots, in hostfile order. Without a hostfile, this machine.
    const poolSlots = hostfile?.hosts.reduce((sum, host) => sum + host.slots, 0) ?? 0;
    if (poolSlots > kMaxPoolSlots) {
        throw new InputError([{code: ErrorCodes.usage, path: "--hostfile", message: `${hostfile!.file} offers ${poolSlots} slots; mixz supports at most ${kMaxPoolSlots}`}]);
    }
    const source = hostfile === undefined ? "the local pool (no --hostfile)" : `hostfile ${hostfile.file}`;
    const localSlots = request.nproc ?? request.numGpus ?? 1;
    const pool: SelectedHost[] = hostfile === undefined
        ? [{name: "localhost", slots: range(localSlots)}]
        : hostfile.hosts.map((host) => ({name: host.name, slots: range(host.slots)}));

    let selected: SelectedHost[];
    if (include !== undefined) selected = applyResourceFilter(pool, parseResourceFilter(include, "--include"), "include", source);
    else if (exclude !== undefined) selected = applyResourceFilter(pool, parseResourceFilter(exclude, "--exclude"), "exclude", source);
    else selected = pool.filter((host) => host.slots.length > 0); // slots=0: the host takes no part

    if (request.numNodes !== undefined) {
        if (request.numNodes > selected.length) {
            throw new InputError([{
                code: ErrorCodes.usage,
                path: "--num_nodes",
                message: `${request.numNodes} nodes requested but ${source} has ${selected.length} host(s) with slots`
            }]);
        }
        selected = selected.slice(0, request.numNodes);
    }
    if (request.numGpus !== undefined && hostfile !== undefined) {
        const numGpus = request.numGpus;
        const tooSmall = selected.filter((host) => host.slots.length < numGpus);
        if (tooSmall.length > 0) {
            throw new InputError(tooSmall.map((host) => ({
                code: ErrorCodes.usage,
                path: "--num_gpus",
                message: `${numGpus} exceeds the ${host.slots.length} slot(s) of host '${host.name}' in ${source}`
            })));
        }
        selected = selected.map((host) => ({name: host.name, slots: range(numGpus)}));
    }
    const total = selected.reduce((sum, host) => sum + host.slots.length, 0);
    if (total > kMaxRanks) {
        throw new InputError([{code: ErrorCodes.usage, message: `${total} ranks is more than mixz supports (${kMaxRanks})`}]);
    }
    if (selected.length === 0) {
        throw new InputError([{
            code: ErrorCodes.emptyWorld,
            ...(hostfile === undefined ? {} : {file: hostfile.file}),
            message: "no ranks to run: the hostfile and the --include/--exclude/--num_nodes/--num_gpus flags select no slot"
        }]);
    }

    let nextRank = 0;
    let allLocal = true;
    const nodes: PlanNode[] = selected.map((host, nodeRank) => {
        const ranks = host.slots.map(() => nextRank++);
        const local = environment.isLocal(host.name);
        allLocal &&= local;
        return {
            host: host.name,
            node_rank: nodeRank,
            slots: [...host.slots],
            ranks,
            local_ranks: host.slots.map((_, index) => index),
            spawn: local && request.forceSsh !== true ? "local" : "ssh"
        };
    });
    return {
        world_size: nextRank,
        master_addr: request.masterAddr ?? (allLocal ? "127.0.0.1" : environment.launcherHost),
        master_port: request.masterPort ?? kDefaultMasterPort,
        nodes
    };
}

export function defaultPlanEnvironment(): PlanEnvironment {
    return {isLocal: localHostPredicate(), launcherHost: hostname()};
}

function checkCount(value: number | undefined, flag: string, max: number, usage: (path: string, message: string) => void): void {
    const problem = value === undefined ? undefined : wholeNumberProblem(value, 1, max);
    if (problem !== undefined) usage(flag, problem);
}

function range(count: number): number[] {
    return Array.from({length: count}, (_, i) => i);
}
