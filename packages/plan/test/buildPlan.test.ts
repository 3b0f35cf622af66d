import assert from "node:assert/strict";
import {describe, it} from "node:test";
import {ErrorCodes, InputError} from "@mixz/protocol";
import {buildPlan, formatPlanJson, formatPlanTable, parseHostfile, type PlanEnvironment, type PlanRequest, type WorldPlan} from "@mixz/plan";

/** Planning is pure given this environment: no DNS, no real host name. */
const env: PlanEnvironment = {isLocal: (host) => host === "localhost" || host.startsWith("127."), launcherHost: "launcher"};

const cluster = parseHostfile(
    ["worker-0 slots=4", "worker-1 slots=4", "worker-2 slots=2", "idle slots=0", "worker-3 slots=3"].join("\n"),
    "hosts"
);

/** host → slots, the compact view of a plan that the tables below compare. */
function layout(plan: WorldPlan): Record<string, number[]> {
    return Object.fromEntries(plan.nodes.map((node) => [node.host, [...node.slots]]));
}

function problemsOf(request: PlanRequest): InputError["problems"] {
    try {
        buildPlan(request, env);
    } catch (error) {
        assert.ok(error instanceof InputError, `expected InputError, got ${String(error)}`);
        return error.problems;
    }
    assert.fail("expected an InputError");
}

describe("resource selection", () => {
    const cases: Array<[string, Omit<PlanRequest, "hostfile">, Record<string, number[]>]> = [
        ["whole hostfile; slots=0 host takes no part", {}, {"worker-0": [0, 1, 2, 3], "worker-1": [0, 1, 2, 3], "worker-2": [0, 1], "worker-3": [0, 1, 2]}],
        ["include a bare host = all its slots", {include: "worker-1"}, {"worker-1": [0, 1, 2, 3]}],
        ["include keeps hostfile order, not filter order", {include: "worker-2@worker-0:1"}, {"worker-0": [1], "worker-2": [0, 1]}],
        ["include slots sorted and merged", {include: "worker-0:3,1@worker-0:1,0"}, {"worker-0": [0, 1, 3]}],
        ["bare name wins over a slot list for the same host", {include: "worker-0:2@worker-0"}, {"worker-0": [0, 1, 2, 3]}],
        ["exclude a whole host", {exclude: "worker-1"}, {"worker-0": [0, 1, 2, 3], "worker-2": [0, 1], "worker-3": [0, 1, 2]}],
        ["exclude slots", {exclude: "worker-0:0,3@worker-3:1"}, {"worker-0": [1, 2], "worker-1": [0, 1, 2, 3], "worker-2": [0, 1], "worker-3": [0, 2]}],
        ["exclude every slot of a host drops it", {exclude: "worker-2:0,1"}, {"worker-0": [0, 1, 2, 3], "worker-1": [0, 1, 2, 3], "worker-3": [0, 1, 2]}],
        ["exclude the slots=0 host by name", {exclude: "idle"}, {"worker-0": [0, 1, 2, 3], "worker-1": [0, 1, 2, 3], "worker-2": [0, 1], "worker-3": [0, 1, 2]}],
        ["num_nodes keeps the first N active hosts", {numNodes: 2}, {"worker-0": [0, 1, 2, 3], "worker-1": [0, 1, 2, 3]}],
        ["num_nodes counts only hosts with slots", {numNodes: 4}, {"worker-0": [0, 1, 2, 3], "worker-1": [0, 1, 2, 3], "worker-2": [0, 1], "worker-3": [0, 1, 2]}],
        ["num_gpus takes slots 0..G-1", {numGpus: 2}, {"worker-0": [0, 1], "worker-1": [0, 1], "worker-2": [0, 1], "worker-3": [0, 1]}],
        ["num_nodes with num_gpus", {numNodes: 1, numGpus: 3}, {"worker-0": [0, 1, 2]}]
    ];
    for (const [name, request, expected] of cases) {
        it(name, () => assert.deepEqual(layout(buildPlan({hostfile: cluster, ...request}, env)), expected));
    }
});

describe("resource selection errors", () => {
    const cases: Array<[string, PlanRequest, string, string | undefined, RegExp]> = [
        ["include and exclude", {hostfile: cluster, include: "worker-0", exclude: "worker-1"}, ErrorCodes.usage, "--include", /mutually exclusive/],
        ["include with num_nodes", {hostfile: cluster, include: "worker-0", numNodes: 1}, ErrorCodes.usage, "--num_nodes", /Cannot specify/],
        ["exclude with num_gpus", {hostfile: cluster, exclude: "worker-0", numGpus: 1}, ErrorCodes.usage, "--num_gpus", /Cannot specify/],
        ["unknown host in include, with a suggestion", {hostfile: cluster, include: "worker-9"}, ErrorCodes.filter, "--include", /Hostname 'worker-9' not found in hostfile hosts; did you mean 'worker-0'\?/],
        ["unknown host in exclude", {hostfile: cluster, exclude: "gpu-node"}, ErrorCodes.filter, "--exclude", /Hostname 'gpu-node' not found/],
        ["included slot beyond slots", {hostfile: cluster, include: "worker-0:7"}, ErrorCodes.filter, "--include", /No slot '7' specified on host 'worker-0' \(its slots are 0-3\)/],
        ["excluded slot beyond slots", {hostfile: cluster, exclude: "worker-2:2"}, ErrorCodes.filter, "--exclude", /No slot '2' specified on host 'worker-2'/],
        ["including a slots=0 host", {hostfile: cluster, include: "idle"}, ErrorCodes.filter, "--include", /slots=0 and takes no part/],
        ["slot of a slots=0 host", {hostfile: cluster, include: "idle:0"}, ErrorCodes.filter, "--include", /No slot '0'.*it has slots=0/],
        ["negative slot", {hostfile: cluster, include: "worker-0:-1"}, ErrorCodes.filter, "--include", /slot '-1' of host 'worker-0' is not a whole number/],
        ["non-numeric slot", {hostfile: cluster, include: "worker-0:a"}, ErrorCodes.filter, "--include", /slot 'a'/],
        ["two colons", {hostfile: cluster, include: "worker-0:1:2"}, ErrorCodes.filter, "--include", /more than one ':'/],
        ["colon without slots", {hostfile: cluster, include: "worker-0:"}, ErrorCodes.filter, "--include", /no slots after ':'/],
        ["empty spec between @", {hostfile: cluster, include: "worker-0@@worker-1"}, ErrorCodes.filter, "--include", /empty host name before or after an .@. separator/],
        ["trailing @", {hostfile: cluster, exclude: "worker-0@"}, ErrorCodes.filter, "--exclude", /empty host name/],
        ["empty include", {hostfile: cluster, include: ""}, ErrorCodes.filter, "--include", /is empty/],
        ["colon without a name", {hostfile: cluster, include: ":1"}, ErrorCodes.filter, "--include", /no host name before ':'/],
        ["a bare name does not hide a missing slot of the same host", {hostfile: cluster, include: "worker-2:5@worker-2"}, ErrorCodes.filter, "--include", /No slot '5' specified on host 'worker-2'/],
        ["excluded missing slot next to the bare name", {hostfile: cluster, exclude: "worker-2@worker-2:5"}, ErrorCodes.filter, "--exclude", /No slot '5' specified on host 'worker-2'/],
        ["slot beyond 2^53", {hostfile: cluster, include: "worker-0:99999999999999999999999"}, ErrorCodes.filter, "--include", /slot '99999999999999999999999' of host 'worker-0' is not a whole number/],
        ["only '@'", {hostfile: cluster, include: "@"}, ErrorCodes.filter, "--include", /empty host name before or after an '@'/],
        ["exclude everything", {hostfile: cluster, exclude: "worker-0@worker-1@worker-2@worker-3"}, ErrorCodes.emptyWorld, undefined, /no ranks to run/],
        ["num_gpus above a host's slots", {hostfile: cluster, numGpus: 4}, ErrorCodes.usage, "--num_gpus", /4 exceeds the 2 slot\(s\) of host 'worker-2'/],
        ["num_nodes above the host count", {hostfile: cluster, numNodes: 5}, ErrorCodes.usage, "--num_nodes", /5 nodes requested but hostfile hosts has 4 host\(s\) with slots/],
        ["num_nodes zero", {hostfile: cluster, numNodes: 0}, ErrorCodes.usage, "--num_nodes", /0 is not a whole number ≥ 1/],
        ["num_gpus fractional", {hostfile: cluster, numGpus: 1.5}, ErrorCodes.usage, "--num_gpus", /not a whole number/],
        ["nproc with a hostfile", {hostfile: cluster, nproc: 2}, ErrorCodes.usage, "--nproc", /without --hostfile/],
        ["nproc with num_gpus", {nproc: 2, numGpus: 2}, ErrorCodes.usage, "--nproc", /use one/],
        ["num_nodes > 1 without a hostfile", {numNodes: 2}, ErrorCodes.usage, "--num_nodes", /no extra nodes/],
        ["nproc zero", {nproc: 0}, ErrorCodes.usage, "--nproc", /not a whole number ≥ 1/],
        ["nproc absurd", {nproc: 100000}, ErrorCodes.usage, "--nproc", /more than 65536/],
        ["port out of range", {nproc: 1, masterPort: 70000}, ErrorCodes.usage, "--master-port", /not a port number/],
        ["empty master address", {nproc: 1, masterAddr: " "}, ErrorCodes.usage, "--master-addr", /is empty/]
    ];
    for (const [name, request, code, path, message] of cases) {
        it(name, () => {
            const problems = problemsOf(request);
            const problem = problems[0]!;
            assert.equal(problem.code, code);
            assert.equal(problem.path, path);
            assert.match(problem.message, message);
        });
    }
    it("'@' alone is reported once", () => {
        assert.equal(problemsOf({hostfile: cluster, include: "@"}).length, 1);
    });
    it("a hostfile offering more than 2^20 slots is refused before any list is built", () => {
        const text = Array.from({length: 300}, (_, i) => `n${i} slots=4000`).join("\n");
        const problems = problemsOf({hostfile: parseHostfile(text, "big"), include: "n0"});
        assert.match(problems[0]!.message, /big offers 1200000 slots; mixz supports at most 1048576/);
    });
    it("more than 65536 selected ranks is an error", () => {
        const text = Array.from({length: 20}, (_, i) => `n${i} slots=4000`).join("\n");
        assert.match(problemsOf({hostfile: parseHostfile(text, "h")})[0]!.message, /80000 ranks is more than mixz supports \(65536\)/);
    });
    it("all host and slot problems of one filter are reported together", () => {
        const problems = problemsOf({hostfile: cluster, include: "worker-0:9@nope@worker-2:5"});
        assert.equal(problems.length, 3);
    });
    it("a hostfile whose hosts all have slots=0 gives an empty world", () => {
        const problems = problemsOf({hostfile: parseHostfile("a slots=0\nb slots=0", "h")});
        assert.equal(problems[0]!.code, ErrorCodes.emptyWorld);
        assert.equal(problems[0]!.file, "h");
    });
});

describe("rank assignment", () => {
    it("global ranks node by node in hostfile order; LOCAL_RANK is the slot's index", () => {
        const plan = buildPlan({hostfile: cluster, exclude: "worker-0:0@worker-1:1,2"}, env);
        assert.equal(plan.world_size, 10);
        assert.deepEqual(plan.nodes.map((n) => [n.host, n.node_rank, n.slots, n.ranks, n.local_ranks]), [
            ["worker-0", 0, [1, 2, 3], [0, 1, 2], [0, 1, 2]],
            ["worker-1", 1, [0, 3], [3, 4], [0, 1]],
            ["worker-2", 2, [0, 1], [5, 6], [0, 1]],
            ["worker-3", 3, [0, 1, 2], [7, 8, 9], [0, 1, 2]]
        ]);
    });
    it("uneven nodes: LOCAL_RANK is the spawn index, not DeepSpeed's RANK % LOCAL_SIZE", () => {
        const plan = buildPlan({hostfile: parseHostfile("a slots=4\nb slots=3", "h")}, env);
        // DeepSpeed would give ranks 4,5,6 on b the local ranks 1,2,0.
        assert.deepEqual(plan.nodes[1]!.ranks, [4, 5, 6]);
        assert.deepEqual(plan.nodes[1]!.local_ranks, [0, 1, 2]);
    });
    it("without a hostfile: localhost with --nproc ranks (default 1), or --num_gpus", () => {
        assert.deepEqual(layout(buildPlan({}, env)), {localhost: [0]});
        assert.deepEqual(layout(buildPlan({nproc: 3}, env)), {localhost: [0, 1, 2]});
        assert.deepEqual(layout(buildPlan({numGpus: 2}, env)), {localhost: [0, 1]});
        assert.deepEqual(layout(buildPlan({nproc: 4, include: "localhost:1,3"}, env)), {localhost: [1, 3]});
    });
    it("a world of one rank on one slot", () => {
        const plan = buildPlan({hostfile: parseHostfile("solo slots=1", "h")}, env);
        assert.equal(plan.world_size, 1);
        assert.deepEqual(plan.nodes[0]!.ranks, [0]);
    });
    it("large worlds stay consistent", () => {
        const text = Array.from({length: 128}, (_, i) => `node-${i} slots=8`).join("\n");
        const plan = buildPlan({hostfile: parseHostfile(text, "h")}, env);
        assert.equal(plan.world_size, 1024);
        assert.deepEqual(plan.nodes[127]!.ranks, [1016, 1017, 1018, 1019, 1020, 1021, 1022, 1023]);
    });
});

describe("spawn mode and coordinator address", () => {
    it("local hosts spawn locally; the coordinator is on loopback", () => {
        const plan = buildPlan({hostfile: parseHostfile("127.0.0.1 slots=2\n127.0.0.2 slots=2", "h")}, env);
        assert.deepEqual(plan.nodes.map((n) => n.spawn), ["local", "local"]);
        assert.equal(plan.master_addr, "127.0.0.1");
        assert.equal(plan.master_port, 29500);
    });
    it("two names for this machine stay two nodes", () => {
        const plan = buildPlan({hostfile: parseHostfile("127.0.0.1 slots=2\n127.0.0.2 slots=2", "h")}, env);
        assert.equal(plan.nodes.length, 2);
        assert.deepEqual(plan.nodes[1]!.ranks, [2, 3]);
    });
    it("remote hosts use SSH, even when only one is selected; the coordinator is the launcher's machine", () => {
        const plan = buildPlan({hostfile: cluster, include: "worker-3"}, env);
        assert.equal(plan.nodes[0]!.spawn, "ssh");
        assert.equal(plan.master_addr, "launcher");
    });
    it("--force-ssh reaches local hosts over SSH", () => {
        const plan = buildPlan({nproc: 2, forceSsh: true}, env);
        assert.equal(plan.nodes[0]!.spawn, "ssh");
    });
    it("--master-addr and --master-port (0 = pick at launch) are honoured", () => {
        const plan = buildPlan({hostfile: cluster, masterAddr: "10.0.0.1", masterPort: 0}, env);
        assert.equal(plan.master_addr, "10.0.0.1");
        assert.equal(plan.master_port, 0);
    });
});

describe("formatting", () => {
    const plan = buildPlan({hostfile: parseHostfile("127.0.0.1 slots=2\nworker-1 slots=3", "h"), masterAddr: "10.1.1.1"}, env);
    it("JSON is exactly the DESIGN.md §4 shape", () => {
        assert.deepEqual(JSON.parse(formatPlanJson(plan)), {
            world_size: 5,
            master_addr: "10.1.1.1",
            master_port: 29500,
            nodes: [
                {host: "127.0.0.1", node_rank: 0, slots: [0, 1], ranks: [0, 1], local_ranks: [0, 1], spawn: "local"},
                {host: "worker-1", node_rank: 1, slots: [0, 1, 2], ranks: [2, 3, 4], local_ranks: [0, 1, 2], spawn: "ssh"}
            ]
        });
        assert.equal(formatPlanJson(plan).includes("\n"), false);
    });
    it("the table names every node with compact rank ranges", () => {
        assert.equal(formatPlanTable(plan), [
            "world size 5 on 2 nodes; coordinator 10.1.1.1:29500",
            "node  host       spawn  slots  ranks  local ranks",
            "   0  127.0.0.1  local  0,1    0,1    0,1",
            "   1  worker-1   ssh    0-2    2-4    0-2"
        ].join("\n"));
    });
});
