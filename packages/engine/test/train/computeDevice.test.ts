// The device decision (train/computeDevice.ts): mixz.device, MIXZ_DEVICE over it, "auto" = cpu
// until the CUDA backend has passed its device checks, LOCAL_RANK as the CUDA ordinal; and what
// an engine asked for a device this machine cannot give says.
import assert from "node:assert/strict";
import {describe, it} from "node:test";

import {resolveConfigObject, type ResolvedConfig} from "@mixz/config";
import {chooseDevice, cudaVerifiedOnHardware, deviceEnvVar, llama, ZeroEngine} from "@mixz/engine";
import {MixzError} from "@mixz/protocol";
import {inProcessWorld} from "../helpers/inProcessWorld.js";

describe("chooseDevice", () => {
    it("the config's choice stands without MIXZ_DEVICE; auto is cpu while the CUDA backend is unverified", () => {
        assert.equal(cudaVerifiedOnHardware, false, "flip only with a passing scripts/device-check run");
        assert.deepEqual(chooseDevice("cpu", 3, {}), {device: "cpu", ordinal: 0, source: "mixz.device", requested: "cpu"});
        assert.deepEqual(chooseDevice("auto", 3, {}), {device: "cpu", ordinal: 0, source: "mixz.device", requested: "auto"});
        assert.deepEqual(chooseDevice("cuda", 3, {}), {device: "cuda", ordinal: 3, source: "mixz.device", requested: "cuda"});
    });

    it("MIXZ_DEVICE overrides the config, in any case and with spaces; empty counts as unset", () => {
        assert.equal(chooseDevice("cpu", 0, {[deviceEnvVar]: "CUDA "}).device, "cuda");
        assert.equal(chooseDevice("cpu", 0, {[deviceEnvVar]: "cuda"}).source, deviceEnvVar);
        assert.equal(chooseDevice("cuda", 0, {[deviceEnvVar]: "cpu"}).device, "cpu");
        assert.equal(chooseDevice("cuda", 0, {[deviceEnvVar]: "auto"}).device, "cpu");
        assert.equal(chooseDevice("cuda", 0, {[deviceEnvVar]: ""}).source, "mixz.device");
    });

    it("the CUDA ordinal is the given local rank, else $LOCAL_RANK, else 0", () => {
        assert.equal(chooseDevice("cuda", undefined, {LOCAL_RANK: "2"}).ordinal, 2);
        assert.equal(chooseDevice("cuda", 1, {LOCAL_RANK: "2"}).ordinal, 1);
        assert.equal(chooseDevice("cuda", undefined, {LOCAL_RANK: "x"}).ordinal, 0);
        assert.equal(chooseDevice("cuda", undefined, {}).ordinal, 0);
    });

    it("a MIXZ_DEVICE that is no device is a user error naming the variable", () => {
        assert.throws(
            () => chooseDevice("auto", 0, {[deviceEnvVar]: "gpu"}),
            (error: unknown) =>
                error instanceof MixzError && error.code === "MIXZ_ERR_CONFIG_INVALID_VALUE" && error.category === "user" &&
                /MIXZ_DEVICE/.test(error.message) && /"gpu"/.test(error.message) && !error.message.includes("\n")
        );
    });
});

function config(device: string): ResolvedConfig {
    return resolveConfigObject({
        train_micro_batch_size_per_gpu: 1,
        optimizer: {type: "AdamW", params: {lr: 0.01}},
        zero_optimization: {stage: 3},
        mixz: {device}
    }, {worldSize: 1}).config;
}

const tiny = llama({vocabSize: 16, hidden: 8, layers: 1, heads: 2, kvHeads: 1, intermediate: 12, maxSeqLen: 8, seed: 1});
let jobs = 0;

// These two read the config's choice, which MIXZ_DEVICE would override.
const envSet = process.env[deviceEnvVar] ? `${deviceEnvVar} is set (${process.env[deviceEnvVar]}): it overrides the config these tests check` : false;

describe("ZeroEngine on a requested device", {skip: envSet}, () => {
    it("mixz.device cpu runs on the CPU backend and says so", async () => {
        const [world] = await inProcessWorld(1, {jobId: `compute-device-${process.pid}-${jobs++}`});
        const engine = await ZeroEngine.create({model: tiny, config: config("cpu"), communicator: world!});
        try {
            assert.deepEqual(engine.device, {device: "cpu", ordinal: 0, source: "mixz.device", requested: "cpu"});
        } finally {
            await engine.dispose();
        }
    });

    it("cuda on a machine without a usable GPU rejects with one line and leaves the communicator to the caller", async () => {
        const [world] = await inProcessWorld(1, {jobId: `compute-device-${process.pid}-${jobs++}`});
        try {
            await assert.rejects(
                ZeroEngine.create({model: tiny, config: config("cuda"), communicator: world!}),
                (error: unknown) => {
                    assert.ok(error instanceof MixzError, String(error));
                    // No CUDA in this build: InvalidArgument naming nvcc; CUDA built but no driver or
                    // device here: an I/O error naming what is missing.
                    assert.match(error.message, /nvcc|CUDA|cuda/);
                    assert.ok(!error.message.trim().includes("\n"), error.message);
                    return true;
                }
            );
            assert.equal(world!.disposed, false);
        } finally {
            await world!.dispose();
        }
    });
});
