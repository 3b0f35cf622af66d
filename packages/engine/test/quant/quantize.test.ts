// Block quantization through @mixz/engine: the worked examples of reference/zeropp.md §1.6 bit for
// bit, an independent TypeScript model on random data, padding, mixed block sizes (pitfall P2),
// error levels, and argument validation in TS and in the addon. Every numerical case runs on the
// scalar kernels and on the AVX2 kernels (skipped, with a note, on a CPU without AVX2), and the two
// are compared byte for byte.
import assert from "node:assert/strict";
import {describe, test} from "node:test";


import {
    convertFloats,
    dequantize,
    dequantizeSegments,
    loadBinding,
    NativeErrorCodes,
    paddedSize,
    quantBenchmark,
    quantBlockCount,
    quantInfo,
    quantize,
    quantizedBytes
} from "@mixz/engine";
import type {FloatDType, QuantBits, SimdMode} from "@mixz/engine";

import {
    decode,
    encode,
    float32Bits,
    float32FromBits,
    fp16ToNumber,
    gaussian,
    numberToBf16,
    numberToFp16,
    packCodes,
    referenceDequantize,
    referenceQuantize,
    seededRandom,
    unpackCodes
} from "../fixtures/quantReference.js";
import {rejectsWith} from "../helpers/rejectsWith.js";

const invalidArgument = NativeErrorCodes.invalidArgument;
const hasAvx2 = quantInfo().avx2;
const paths: readonly {readonly simd: SimdMode; readonly skip: string | false}[] = [
    {simd: "scalar", skip: false},
    {simd: "avx2", skip: hasAvx2 ? false : "this CPU has no AVX2/FMA/F16C"}
];
const dtypes: readonly FloatDType[] = ["fp32", "fp16", "bf16"];

/** §1.6: 16 fp16 values, two blocks of 8. */
const workedInput = new Uint16Array([
    0x3800, 0xb400, 0x3000, 0xbc00, 0x3a00, 0x0000, 0xb4cd, 0x3b33, 0x211f, 0xa51f, 0x27cf, 0x9c19, 0x0000, 0x23ae,
    0xa7f0, 0x191f
]);
const workedCodes = [64, -32, 16, -128, 96, 0, -38, 115, 41, -83, 126, -17, 0, 62, -128, 10];
/** The table's dequantized fp16 values (rounded to 6 digits there) and their exact bit patterns. */
const workedOutput = [
    0.5, -0.25, 0.125, -1.0, 0.75, 0.0, -0.296875, 0.898438, 0.009933, -0.020111, 0.030518, -0.00412, 0.0, 0.015015,
    -0.031006, 0.002422
];
const workedOutputBits = [
    0x3800, 0xb400, 0x3000, 0xbc00, 0x3a00, 0x0000, 0xb4c0, 0x3b30, 0x2116, 0xa526, 0x27d0, 0x9c38, 0x0000, 0x23b0,
    0xa7f0, 0x18f6
];


/** A raw binding call must throw synchronously with the code (a plain Error from convertError). */
function throwsNative(fn: () => unknown, pattern?: RegExp): void {
    let caught: unknown;
    try {
        const result = fn();
        // A promise means the descriptor was accepted; make sure it does not dangle.
        if (result instanceof Promise) void result.catch(() => undefined);
    } catch (error) {
        caught = error;
    }
    assert.ok(caught instanceof Error, "expected the binding to throw synchronously");
    assert.equal((caught as {code?: unknown}).code, invalidArgument, caught.message);
    if (pattern !== undefined) assert.match(caught.message, pattern);
}

function relativeRms(original: ArrayLike<number>, restored: ArrayLike<number>): number {
    let error = 0;
    let norm = 0;
    for (let i = 0; i < original.length; ++i) {
        error += (restored[i]! - original[i]!) ** 2;
        norm += original[i]! ** 2;
    }
    return Math.sqrt(error / norm);
}

/** Values that stress rounding: ties at ±0.5 in code units, zeros of both signs, subnormals, wide ranges. */
function trickyValues(count: number, seed: number): Float64Array {
    const random = seededRandom(seed);
    const values = gaussian(count, 0.02, seed + 1);
    for (let i = 0; i < count; ++i) {
        const pick = random();
        if (pick < 0.05) values[i] = 0;
        else if (pick < 0.08) values[i] = -0;
        else if (pick < 0.12) values[i] = (Math.floor(random() * 256) - 128 + 0.5) / 128; // ties when absmax is 1
        else if (pick < 0.14) values[i] = 1;
        else if (pick < 0.16) values[i] = -1;
        else if (pick < 0.18) values[i] = (random() - 0.5) * 2 ** -20; // fp16 subnormals
        else if (pick < 0.2) values[i] = (random() - 0.5) * 6e4;
    }
    return values;
}

for (const {simd, skip} of paths) {
    describe(`quantize and dequantize, ${simd} kernels`, {skip}, () => {
        test("zeropp.md §1.6 worked example, bit for bit (fp16 in, two blocks of 8)", async () => {
            const {q, scales, paddedElements} = await quantize(workedInput, {dtype: "fp16", bits: 8, blockSize: 8, simd});
            assert.equal(paddedElements, 16);
            assert.ok(q instanceof Int8Array);
            assert.deepEqual([...q], workedCodes);
            assert.equal(scales.length, 2);
            assert.equal(scales[0], 0.0078125);
            assert.equal(scales[1], 0.0002422332763671875);
            const out = await dequantize(q, scales, {bits: 8, blockSize: 8, elements: 16, outDtype: "fp16", simd});
            assert.ok(out instanceof Uint16Array);
            assert.deepEqual([...out], workedOutputBits);
            for (let i = 0; i < 16; ++i) {
                assert.ok(Math.abs(fp16ToNumber(out[i]!) - workedOutput[i]!) < 5e-7, `element ${i}`);
            }
        });

        test("clamp and rounding demo: +absmax → 127, −absmax → −128, 0.5 ties to even", async () => {
            const x = [1.0, -1.0, 0.5, -0.5, 0.00390625, 0.001953125, 0.005859375, 0];
            for (const dtype of dtypes) {
                const {q, scales} = await quantize(encode(x, dtype), {dtype, bits: 8, blockSize: 8, simd});
                assert.deepEqual([...q], [127, -128, 64, -64, 0, 0, 1, 0], dtype);
                assert.deepEqual([...scales], [0.0078125]);
                const out = await dequantize(q, scales, {bits: 8, blockSize: 8, elements: 8, outDtype: "fp32", simd});
                assert.equal(out[0], 0.9921875);
                assert.equal(out[1], -1);
            }
        });

        test("int4: scale 8/absmax, clamp [−8, 7], element 2i in the high nibble", async () => {
            const x = [1.0, -1.0, 0.5, -0.5, 0.0625, 0.1875, -0.125, 0.3];
            // x · 8 = 8, −8, 4, −4, 0.5, 1.5, −1, 2.4 → 7 (clamped), −8, 4, −4, 0 and 2 (ties to even), −1, 2.
            const {q, scales} = await quantize(Float32Array.from(x), {dtype: "fp32", bits: 4, blockSize: 8, simd});
            assert.ok(q instanceof Uint8Array);
            assert.deepEqual([...q], [0x78, 0x4c, 0x02, 0xf2]);
            assert.deepEqual([...scales], [0.125]);
            const out = await dequantize(q, scales, {bits: 4, blockSize: 8, elements: 8, outDtype: "fp32", simd});
            assert.deepEqual([...out], [0.875, -1, 0.5, -0.5, 0, 0.25, -0.125, 0.25]);

            // 5 elements: 3 bytes of codes for the values, then zero padding up to the block.
            const odd = await quantize(Float32Array.from(x.slice(0, 5)), {dtype: "fp32", bits: 4, blockSize: 8, simd});
            assert.equal(odd.paddedElements, 8);
            assert.deepEqual([...odd.q], [0x78, 0x4c, 0x00, 0x00]);
            const unpadded = await quantize(Float32Array.from(x.slice(0, 5)), {
                dtype: "fp32",
                bits: 4,
                blockSize: 8,
                paddedElements: 5,
                simd
            });
            assert.deepEqual([...unpadded.q], [0x78, 0x4c, 0x00]); // the odd last code leaves its low nibble 0
            const back = await dequantize(unpadded.q, unpadded.scales, {
                bits: 4,
                blockSize: 8,
                elements: 5,
                outDtype: "fp32",
                simd
            });
            assert.deepEqual([...back], [0.875, -1, 0.5, -0.5, 0]);
        });

        test("every input dtype × output dtype × bits matches the TypeScript model", async () => {
            const n = 3000 + 77;
            const values = trickyValues(n, 42);
            for (const dtype of dtypes) {
                const input = encode(values, dtype);
                const exact = decode(input, dtype);
                for (const bits of [8, 4] as const) {
                    for (const blockSize of [8, 64, 1024]) {
                        const padded = paddedSize(n, blockSize);
                        const model = referenceQuantize(exact, bits, blockSize, padded);
                        const {q, scales} = await quantize(input, {dtype, bits, blockSize, simd});
                        const label = `${dtype} int${bits} block ${blockSize}`;
                        assert.deepEqual(q, packCodes(model.codes, bits), `codes, ${label}`);
                        assert.deepEqual(scales, model.scales, `scales, ${label}`);
                        for (const outDtype of dtypes) {
                            const out = await dequantize(q, scales, {bits, blockSize, elements: n, outDtype, simd});
                            const expected = referenceDequantize(model.codes, model.scales, blockSize, n, outDtype);
                            assert.deepEqual(out, expected, `dequantized to ${outDtype}, ${label}`);
                        }
                    }
                }
            }
        });

        test("Gaussian weights (σ = 0.02, blocks of 4096): int8 round trip ≈ 0.87 % relative RMS", async () => {
            const n = 4096 * 256;
            const input = encode(gaussian(n, 0.02, 7), "fp16");
            const x = decode(input, "fp16");
            const {q, scales} = await quantize(input, {dtype: "fp16", bits: 8, blockSize: 4096, simd});
            const options = {bits: 8, blockSize: 4096, elements: n, simd} as const;
            const y16 = decode(await dequantize(q, scales, {...options, outDtype: "fp16"}), "fp16");
            const y32 = await dequantize(q, scales, {...options, outDtype: "fp32"});
            const rms16 = relativeRms(x, y16);
            const rms32 = relativeRms(x, y32);
            assert.ok(rms16 >= 0.008 && rms16 <= 0.0095, `relative RMS ${(rms16 * 100).toFixed(3)} % (fp16 out)`);
            assert.ok(rms32 >= 0.008 && rms32 <= 0.0095, `relative RMS ${(rms32 * 100).toFixed(3)} % (fp32 out)`);
            // Per element (fp32 out): |y − x| ≤ s/2, except values clamped from above (x·scale > 127.5) ≤ s.
            let maxError = 0;
            for (let i = 0; i < n; ++i) {
                const s = scales[Math.floor(i / 4096)]!;
                const error = Math.abs(y32[i]! - x[i]!);
                maxError = Math.max(maxError, error);
                const clamped = x[i]! / s > 127.5;
                assert.ok(error <= s * (clamped ? 1 : 0.5) * (1 + 1e-6), `element ${i}: error ${error}, s ${s}`);
            }
            // zeropp.md: max abs error ≈ 7.9e-4 at σ = 0.02 (absmax ≈ 0.1 → absmax/128).
            assert.ok(maxError > 2e-4 && maxError < 1e-3, `max abs error ${maxError}`);
        });

        test("Gaussian weights: int4 round trip ≈ 13.8 % relative RMS (16 levels), within half a step", async () => {
            const n = 4096 * 64;
            const input = encode(gaussian(n, 0.02, 8), "fp16");
            const x = decode(input, "fp16");
            const {q, scales} = await quantize(input, {dtype: "fp16", bits: 4, blockSize: 4096, simd});
            const y = await dequantize(q, scales, {bits: 4, blockSize: 4096, elements: n, outDtype: "fp32", simd});
            const rms = relativeRms(x, y);
            // Step absmax/8 with absmax ≈ 4.5σ: ≈ (4.5σ/8)/√12 / σ ≈ 16 %, a little less in practice
            // because most blocks' absmax is below 4.5σ (13.84 % measured with this seed).
            assert.ok(rms >= 0.12 && rms <= 0.16, `int4 relative RMS ${(rms * 100).toFixed(2)} %`);
            let maxCodeError = 0;
            for (let i = 0; i < n; ++i) {
                const s = scales[Math.floor(i / 4096)]!;
                const clamped = x[i]! / s > 7.5;
                if (!clamped) maxCodeError = Math.max(maxCodeError, Math.abs(y[i]! - x[i]!) / s);
            }
            assert.ok(maxCodeError <= 0.5 + 1e-6, `max error ${maxCodeError} code steps`);
        });

        test("sizes 0, 1, 7, a block, odd, not a multiple of the block: padding is zero and never moves a scale", async () => {
            const blockSize = 64;
            for (const n of [0, 1, 7, 8, 63, 64, 65, 127, 1001, 4096 + 3]) {
                for (const bits of [8, 4] as const) {
                    // The input array is longer than `elements`; the extra values are huge and must be ignored.
                    const values = gaussian(n + 5, 0.02, n);
                    for (let i = n; i < n + 5; ++i) values[i] = 1e4;
                    const input = encode(values, "fp16");
                    const padded = paddedSize(n, blockSize);
                    const result = await quantize(input, {dtype: "fp16", bits, blockSize, elements: n, simd});
                    assert.equal(result.elements, n);
                    assert.equal(result.paddedElements, padded);
                    assert.equal(result.q.length, quantizedBytes(padded, bits));
                    assert.equal(result.scales.length, quantBlockCount(n, blockSize));
                    const codes = unpackCodes(result.q, bits, padded);
                    for (let i = n; i < padded; ++i) assert.equal(codes[i], 0, `padding code ${i} of ${n}`);
                    const model = referenceQuantize(decode(input, "fp16").subarray(0, n), bits, blockSize, padded);
                    assert.deepEqual(result.scales, model.scales, `scales for ${n}`);
                    assert.deepEqual(codes, model.codes, `codes for ${n}`);
                    const out = await dequantize(result.q, result.scales, {
                        bits,
                        blockSize,
                        elements: n,
                        outDtype: "fp16",
                        simd
                    });
                    assert.equal(out.length, n);
                }
            }
            // Padding beyond whole blocks: the extra blocks are all zero codes with s = 1.
            const extra = await quantize(Float32Array.from([0.5, -0.25, 0.125]), {
                dtype: "fp32",
                bits: 8,
                blockSize: 8,
                paddedElements: 40,
                simd
            });
            assert.equal(extra.q.length, 40);
            assert.deepEqual([...extra.q.subarray(3)], new Array(37).fill(0));
            assert.deepEqual([...extra.scales], [0.00390625, 1, 1, 1, 1]);
            // An all-zero block: scale 1 (DeepSpeed's rule), codes 0.
            const zeros = await quantize(new Uint16Array(16), {dtype: "bf16", bits: 8, blockSize: 8, simd});
            assert.deepEqual([...zeros.scales], [1, 1]);
        });

        test("a large buffer (10M elements) on several threads equals one thread and the scalar kernels", async () => {
            const n = 10_000_000 + 3;
            const input = new Uint16Array(n);
            const random = seededRandom(99);
            for (let i = 0; i < n; ++i) input[i] = numberToFp16((random() - 0.5) * 0.1);
            const threaded = await quantize(input, {dtype: "fp16", bits: 8, blockSize: 4096, simd, threads: 2});
            const single = await quantize(input, {dtype: "fp16", bits: 8, blockSize: 4096, simd, threads: 1});
            const scalar = await quantize(input, {dtype: "fp16", bits: 8, blockSize: 4096, simd: "scalar", threads: 3});
            assert.ok(Buffer.from(threaded.q.buffer).equals(Buffer.from(single.q.buffer)));
            assert.ok(Buffer.from(threaded.q.buffer).equals(Buffer.from(scalar.q.buffer)));
            assert.ok(Buffer.from(threaded.scales.buffer).equals(Buffer.from(single.scales.buffer)));
            assert.ok(Buffer.from(threaded.scales.buffer).equals(Buffer.from(scalar.scales.buffer)));
            const options = {bits: 8, blockSize: 4096, elements: n, outDtype: "bf16"} as const;
            const a = await dequantize(threaded.q, threaded.scales, {...options, simd, threads: 2});
            const b = await dequantize(threaded.q, threaded.scales, {...options, simd: "scalar", threads: 1});
            assert.ok(Buffer.from(a.buffer).equals(Buffer.from(b.buffer)));
            // Spot-check against the model: the last, partial block.
            const lastBlock = Math.floor((n - 1) / 4096);
            const tail = decode(input.subarray(lastBlock * 4096), "fp16");
            const model = referenceQuantize(tail, 8, 4096, paddedSize(tail.length, 4096));
            assert.equal(threaded.scales[lastBlock], model.scales[0]);
        });

        test("pitfall P2: params with different block sizes in one coalesced buffer dequantize per param", async () => {
            // Param A: 3 blocks of 4096. Param B: 10000 elements in blocks of 1024 (padded to 10240).
            // B's rows differ in magnitude (as weights of different layers or rows do), so a wrong
            // block boundary gives values a scale from another magnitude.
            const a = encode(gaussian(3 * 4096, 0.02, 1), "fp16");
            const bValues = gaussian(10_000, 0.01, 2).map((v, i) => v * (1 + 3 * (Math.floor(i / 1024) % 4)));
            const b = encode(bValues, "fp16");
            for (const bits of [8, 4] as const) {
                const qa = await quantize(a, {dtype: "fp16", bits, blockSize: 4096, simd});
                const qb = await quantize(b, {dtype: "fp16", bits, blockSize: 1024, simd});
                const q = new (bits === 8 ? Int8Array : Uint8Array)(qa.q.length + qb.q.length);
                q.set(qa.q);
                q.set(qb.q, qa.q.length);
                const scales = new Float32Array(qa.scales.length + qb.scales.length);
                scales.set(qa.scales);
                scales.set(qb.scales, qa.scales.length);

                const perParam = new Uint16Array(a.length + b.length);
                perParam.set(
                    await dequantize(qa.q, qa.scales, {bits, blockSize: 4096, elements: a.length, outDtype: "fp16", simd})
                );
                perParam.set(
                    await dequantize(qb.q, qb.scales, {bits, blockSize: 1024, elements: b.length, outDtype: "fp16", simd}),
                    a.length
                );
                // Codes laid out back to back (B after A's padded codes); output trimmed of B's padding.
                const coalesced = await dequantizeSegments(q, scales, {
                    bits,
                    outDtype: "fp16",
                    segments: [
                        {elements: a.length, blockSize: 4096},
                        {elements: b.length, blockSize: 1024, inputOffset: qa.paddedElements}
                    ],
                    simd
                });
                assert.deepEqual(coalesced, perParam, `int${bits}`);

                // What DeepSpeed's uniform dequantization would do (one block size for the whole
                // buffer): most of B gets a wrong scale, and the error explodes.
                const uniformElements = qa.paddedElements + qb.paddedElements;
                const uniform = await dequantize(q, scales.subarray(0, quantBlockCount(uniformElements, 4096)), {
                    bits,
                    blockSize: 4096,
                    elements: uniformElements,
                    outDtype: "fp16",
                    simd
                });
                const original = [...decode(a, "fp16"), ...decode(b, "fp16")];
                const uniformValues = [
                    ...decode(uniform.subarray(0, a.length), "fp16"),
                    ...decode(uniform.subarray(qa.paddedElements, qa.paddedElements + b.length), "fp16")
                ];
                assert.notDeepEqual(uniformValues, [...decode(perParam, "fp16")]);
                const good = relativeRms(original, decode(coalesced, "fp16"));
                const bad = relativeRms(original, uniformValues);
                assert.ok(bad > (bits === 8 ? 10 : 3) * good, `int${bits}: uniform ${bad}, per param ${good}`);
                let wrong = 0;
                const right = decode(perParam, "fp16");
                for (let i = a.length; i < original.length; ++i) if (uniformValues[i] !== right[i]) wrong += 1;
                assert.ok(wrong > 0.6 * b.length, `int${bits}: ${wrong} of B's ${b.length} values differ`);
            }
        });

        test("dequantizeSegments: explicit offsets, gaps in the output, several segments per task", async () => {
            const values = gaussian(100, 0.02, 5);
            const one = await quantize(encode(values, "bf16"), {dtype: "bf16", bits: 8, blockSize: 8, simd});
            // The same codes as three segments, written in reverse order with gaps between them.
            const out = await dequantizeSegments(one.q, one.scales, {
                bits: 8,
                outDtype: "fp32",
                segments: [
                    {elements: 40, blockSize: 8, inputOffset: 0, scaleOffset: 0, outputOffset: 200},
                    {elements: 32, blockSize: 8, inputOffset: 40, scaleOffset: 5, outputOffset: 100},
                    {elements: 28, blockSize: 8, inputOffset: 72, scaleOffset: 9, outputOffset: 0}
                ],
                outElements: 250,
                simd
            });
            const whole = await dequantize(one.q, one.scales, {bits: 8, blockSize: 8, elements: 100, outDtype: "fp32", simd});
            assert.deepEqual(out.subarray(200, 240), whole.subarray(0, 40));
            assert.deepEqual(out.subarray(100, 132), whole.subarray(40, 72));
            assert.deepEqual(out.subarray(0, 28), whole.subarray(72, 100));
            assert.ok(out.subarray(28, 100).every((v) => v === 0));
            assert.ok(out.subarray(240).every((v) => v === 0));
        });

        test("non-finite input is rejected by native code with MIXZ_ERR_INVALID_ARGUMENT", async () => {
            for (const [dtype, bad] of [
                ["fp32", Float32Array.from([0, 1, NaN])],
                ["fp32", Float32Array.from([0, -Infinity])],
                ["fp16", Uint16Array.from([0x3c00, 0x7c00])],
                ["fp16", Uint16Array.from([0xfe01])],
                ["bf16", Uint16Array.from([0x7f80, 0])],
                ["bf16", Uint16Array.from([0xffc1])]
            ] as const) {
                await rejectsWith(quantize(bad, {dtype, bits: 8, blockSize: 8, simd}), invalidArgument, /NaN or infinity/);
            }
            const big = new Float32Array(64);
            big[50] = NaN;
            await rejectsWith(quantize(big, {dtype: "fp32", bits: 4, blockSize: 16, simd}), invalidArgument, /block 3 /);
        });

        test("convertFloats: every fp16 to fp32 exactly; fp32 to fp16 and bf16 rounding to nearest even", async () => {
            const all = new Uint16Array(65536).map((_, i) => i);
            const widened = await convertFloats(all, {from: "fp16", to: "fp32", simd});
            // Compare bit patterns through integer views: JS numbers need not keep NaN payloads.
            const widenedBits = new Uint32Array(widened.buffer);
            for (let i = 0; i < 65536; ++i) {
                const expected = fp16ToNumber(i);
                if (Number.isNaN(expected)) {
                    // Quiet NaN with sign and payload: what F16C produces.
                    const sign = (i & 0x8000) << 16;
                    assert.equal(widenedBits[i], (sign | 0x7fc00000 | ((i & 0x3ff) << 13)) >>> 0, `fp16 ${i}`);
                } else {
                    assert.equal(widenedBits[i], float32Bits(expected), `fp16 ${i}`);
                }
            }
            const random = seededRandom(3);
            const bits = new Uint32Array(200_000);
            for (let i = 0; i < bits.length; ++i) bits[i] = Math.floor(random() * 2 ** 32);
            // Boundaries: overflow to inf, the fp16 subnormal range, ties, a signalling NaN.
            bits.set([0x477fefff, 0x477ff000, 0x33000000, 0x33000001, 0x387fc000, 0x38800000, 0x7f7fffff, 0x7f800001]);
            const floats = new Float32Array(bits.buffer);
            const halves = await convertFloats(floats, {from: "fp32", to: "fp16", simd});
            const brains = await convertFloats(floats, {from: "fp32", to: "bf16", simd});
            for (let i = 0; i < floats.length; ++i) {
                const pattern = bits[i]!;
                const nan = (pattern & 0x7fffffff) > 0x7f800000;
                const value = float32FromBits(pattern);
                const half = nan ? ((pattern >>> 16) & 0x8000) | 0x7e00 | ((pattern >>> 13) & 0x3ff) : numberToFp16(value);
                const brain = nan ? (pattern >>> 16) | 0x40 : numberToBf16(value);
                assert.equal(halves[i], half, `fp32 ${pattern.toString(16)} → fp16`);
                assert.equal(brains[i], brain, `fp32 ${pattern.toString(16)} → bf16`);
            }
            const finite = brains.filter((b) => (b & 0x7fff) <= 0x7f80);
            const back = await convertFloats(finite, {from: "bf16", to: "fp16", simd});
            const direct = encode(decode(finite, "bf16"), "fp16");
            assert.deepEqual(back, direct);
        });
    });
}

describe("scalar and AVX2 kernels agree byte for byte", {skip: hasAvx2 ? false : "this CPU has no AVX2/FMA/F16C"}, () => {
    test("random data, every dtype, bits, block size and awkward length", async () => {
        for (const dtype of dtypes) {
            for (const n of [1, 15, 31, 33, 257, 4096, 70_001]) {
                const input = encode(trickyValues(n, n * 7 + 1), dtype);
                for (const bits of [8, 4] as const) {
                    for (const blockSize of [8, 16, 4096, 65536]) {
                        const label = `${dtype} n=${n} int${bits} block ${blockSize}`;
                        const scalar = await quantize(input, {dtype, bits, blockSize, simd: "scalar"});
                        const avx2 = await quantize(input, {dtype, bits, blockSize, simd: "avx2"});
                        assert.deepEqual(avx2.q, scalar.q, `codes, ${label}`);
                        assert.deepEqual(avx2.scales, scalar.scales, `scales, ${label}`);
                        for (const outDtype of dtypes) {
                            const options = {bits, blockSize, elements: scalar.paddedElements, outDtype} as const;
                            const x = await dequantize(scalar.q, scalar.scales, {...options, simd: "scalar"});
                            const y = await dequantize(scalar.q, scalar.scales, {...options, simd: "avx2"});
                            assert.deepEqual(y, x, `→ ${outDtype}, ${label}`);
                        }
                    }
                }
            }
        }
    });

    test("every int8 and int4 code with extreme scales dequantizes identically", async () => {
        const q8 = new Int8Array(256 * 8).map((_, i) => (i % 256) - 128);
        const q4 = new Uint8Array(256 * 8).map((_, i) => i % 256);
        // Multipliers that push products into fp16 overflow and subnormals, bf16 rounding, etc.
        const scales = Float32Array.from([1, 1e-9, 3.0e-8, 700, 1e30, 5.9e-8, 0.0002422332763671875, 1 / 3]);
        for (const outDtype of dtypes) {
            for (const [bits, q] of [
                [8, q8],
                [4, q4]
            ] as const) {
                const elements = bits === 8 ? q.length : q.length * 2;
                const blockSize = elements / scales.length;
                const options = {bits, blockSize, elements, outDtype} as const;
                const x = await dequantize(q, scales, {...options, simd: "scalar"});
                const y = await dequantize(q, scales, {...options, simd: "avx2"});
                assert.deepEqual(y, x, `int${bits} → ${outDtype}`);
            }
        }
    });

    test("MIXZ_SIMD=scalar is read at call time", async () => {
        const saved = process.env["MIXZ_SIMD"];
        try {
            const tiny = {elements: 4096, dtype: "fp16", bits: 8, blockSize: 4096, iterations: 1, threads: 1} as const;
            process.env["MIXZ_SIMD"] = "scalar";
            const run = await quantBenchmark(tiny);
            assert.equal(run.simd, "scalar");
            process.env["MIXZ_SIMD"] = "";
            const auto = await quantBenchmark(tiny);
            assert.equal(auto.simd, "avx2");
            process.env["MIXZ_SIMD"] = "sse2";
            await rejectsWith(
                quantize(new Float32Array(8), {dtype: "fp32", bits: 8, blockSize: 8}),
                invalidArgument,
                /MIXZ_SIMD/
            );
        } finally {
            if (saved === undefined) delete process.env["MIXZ_SIMD"];
            else process.env["MIXZ_SIMD"] = saved;
        }
    });
});

describe("quantization calls run off the JS thread", () => {
    test("a large quantize lets the event loop run before it resolves", async () => {
        const input = new Uint16Array(20_000_000).fill(0x3c00);
        let ticked = false;
        setImmediate(() => {
            ticked = true;
        });
        const pending = quantize(input, {dtype: "fp16", bits: 8, blockSize: 4096, threads: 1});
        await new Promise<void>((resolve) => setImmediate(resolve));
        assert.equal(ticked, true);
        const {q} = await pending;
        assert.equal(q[0], 127);
    });

    test("quantBenchmark reports throughput for the kernels it ran", async () => {
        const result = await quantBenchmark({
            elements: 1 << 16,
            dtype: "fp16",
            bits: 4,
            blockSize: 4096,
            iterations: 3,
            threads: 1,
            simd: "scalar"
        });
        assert.equal(result.simd, "scalar");
        assert.equal(result.threads, 1);
        assert.equal(result.inputBytes, 2 << 16);
        assert.equal(result.quantizedBytes, (1 << 15) + 16 * 4);
        for (const key of ["quantizeGBps", "dequantizeGBps", "dequantizeOutputGBps", "memcpyGBps"] as const) {
            assert.ok(result[key] > 0 && Number.isFinite(result[key]), key);
        }
    });
});

describe("argument validation", () => {
    test("quantize: TypeScript rejects bad options with MIXZ_ERR_INVALID_ARGUMENT before native code", async () => {
        const f32 = new Float32Array(16);
        const u16 = new Uint16Array(16);
        const wrongKind = new Uint8Array(16) as unknown as Int8Array;
        const cases: [string, Promise<unknown>][] = [
            ["Float32Array for fp16", quantize(f32, {dtype: "fp16", bits: 8, blockSize: 8})],
            ["Uint16Array for fp32", quantize(u16, {dtype: "fp32", bits: 8, blockSize: 8})],
            ["Int16Array", quantize(new Int16Array(4) as unknown as Uint16Array, {dtype: "bf16", bits: 8, blockSize: 8})],
            ["bad dtype", quantize(f32, {dtype: "fp64" as FloatDType, bits: 8, blockSize: 8})],
            ["bits 2", quantize(f32, {dtype: "fp32", bits: 2 as QuantBits, blockSize: 8})],
            ["bits '8'", quantize(f32, {dtype: "fp32", bits: "8" as unknown as QuantBits, blockSize: 8})],
            ["block 12", quantize(f32, {dtype: "fp32", bits: 8, blockSize: 12})],
            ["block 4", quantize(f32, {dtype: "fp32", bits: 8, blockSize: 4})],
            ["block 131072", quantize(f32, {dtype: "fp32", bits: 8, blockSize: 131072})],
            ["block 8.5", quantize(f32, {dtype: "fp32", bits: 8, blockSize: 8.5})],
            ["elements > length", quantize(f32, {dtype: "fp32", bits: 8, blockSize: 8, elements: 17})],
            ["elements -1", quantize(f32, {dtype: "fp32", bits: 8, blockSize: 8, elements: -1})],
            ["elements 1.5", quantize(f32, {dtype: "fp32", bits: 8, blockSize: 8, elements: 1.5})],
            ["padded < elements", quantize(f32, {dtype: "fp32", bits: 8, blockSize: 8, paddedElements: 15})],
            ["simd sse", quantize(f32, {dtype: "fp32", bits: 8, blockSize: 8, simd: "sse" as SimdMode})],
            ["threads -1", quantize(f32, {dtype: "fp32", bits: 8, blockSize: 8, threads: -1})],
            ["threads 1000", quantize(f32, {dtype: "fp32", bits: 8, blockSize: 8, threads: 1000})],
            ["options null", quantize(f32, null as unknown as {dtype: "fp32"; bits: 8; blockSize: 8})],
            [
                "out.q wrong kind",
                quantize(f32, {dtype: "fp32", bits: 8, blockSize: 8, out: {q: wrongKind, scales: new Float32Array(2)}})
            ],
            [
                "out.q wrong length",
                quantize(f32, {dtype: "fp32", bits: 8, blockSize: 8, out: {q: new Int8Array(15), scales: new Float32Array(2)}})
            ],
            [
                "out.scales wrong length",
                quantize(f32, {dtype: "fp32", bits: 4, blockSize: 8, out: {q: new Uint8Array(8), scales: new Float32Array(1)}})
            ]
        ];
        for (const [label, promise] of cases) {
            const error = await rejectsWith(promise, invalidArgument);
            assert.match(error.message, /^quantize: /, label);
        }
    });

    test("quantize writes into caller-provided outputs", async () => {
        const out = {q: new Uint8Array(8), scales: new Float32Array(2)};
        const result = await quantize(Float32Array.from([1, -1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0.5]), {
            dtype: "fp32",
            bits: 4,
            blockSize: 8,
            out
        });
        assert.equal(result.q, out.q);
        assert.equal(result.scales, out.scales);
        assert.deepEqual([...out.q], [0x78, 0, 0, 0, 0, 0, 0, 0x07]);
    });

    test("dequantize and dequantizeSegments: TypeScript rejects bad options", async () => {
        const q8 = new Int8Array(16);
        const q4 = new Uint8Array(8);
        const scales = new Float32Array(2);
        const base = {bits: 8, blockSize: 8, elements: 16, outDtype: "fp32"} as const;
        const cases: [string, Promise<unknown>][] = [
            ["q kind for int4", dequantize(q8, scales, {...base, bits: 4})],
            ["q kind for int8", dequantize(q4, scales, base)],
            ["q too short", dequantize(q8, scales, {...base, elements: 17})],
            ["scales too short", dequantize(q8, new Float32Array(1), base)],
            ["scales kind", dequantize(q8, new Float64Array(2) as unknown as Float32Array, base)],
            ["outDtype", dequantize(q8, scales, {...base, outDtype: "int8" as FloatDType})],
            ["out kind", dequantize(q8, scales, {...base, out: new Uint16Array(16) as unknown as Float32Array})],
            ["out length", dequantize(q8, scales, {...base, out: new Float32Array(15)})],
            ["segments not an array", dequantizeSegments(q8, scales, {bits: 8, outDtype: "fp32", segments: {} as never})],
            [
                "segment outside q",
                dequantizeSegments(q8, scales, {bits: 8, outDtype: "fp32", segments: [{elements: 17, blockSize: 8}]})
            ],
            [
                "segment scales outside",
                dequantizeSegments(q8, scales, {
                    bits: 8,
                    outDtype: "fp32",
                    segments: [{elements: 8, blockSize: 8, scaleOffset: 2}]
                })
            ],
            [
                "int4 odd offset",
                dequantizeSegments(q4, scales, {
                    bits: 4,
                    outDtype: "fp32",
                    segments: [{elements: 8, blockSize: 8, inputOffset: 1}]
                })
            ],
            [
                "outputs overlap",
                dequantizeSegments(q8, scales, {
                    bits: 8,
                    outDtype: "fp32",
                    segments: [
                        {elements: 8, blockSize: 8, outputOffset: 0},
                        {elements: 8, blockSize: 8, outputOffset: 4}
                    ]
                })
            ],
            [
                "outElements too small",
                dequantizeSegments(q8, scales, {
                    bits: 8,
                    outDtype: "fp32",
                    segments: [{elements: 8, blockSize: 8}],
                    outElements: 7
                })
            ],
            [
                "segment block size",
                dequantizeSegments(q8, scales, {bits: 8, outDtype: "fp32", segments: [{elements: 8, blockSize: 24}]})
            ]
        ];
        for (const [label, promise] of cases) {
            const error = await rejectsWith(promise, invalidArgument);
            assert.match(error.message, /^dequantize(Segments)?: /, label);
        }
        await rejectsWith(convertFloats(new Float32Array(2), {from: "fp16", to: "fp32"}), invalidArgument, /Uint16Array/);
        await rejectsWith(
            quantBenchmark({elements: 0, dtype: "fp16", bits: 8, blockSize: 4096, iterations: 1, threads: 1}),
            invalidArgument,
            /elements/
        );
    });

    test("empty inputs and outputs are fine", async () => {
        const empty = await quantize(new Uint16Array(0), {dtype: "fp16", bits: 4, blockSize: 4096});
        assert.equal(empty.q.length, 0);
        assert.equal(empty.scales.length, 0);
        assert.equal(empty.paddedElements, 0);
        const out = await dequantize(empty.q, empty.scales, {bits: 4, blockSize: 4096, elements: 0, outDtype: "bf16"});
        assert.equal(out.length, 0);
        const none = await dequantizeSegments(new Int8Array(0), new Float32Array(0), {bits: 8, outDtype: "fp16", segments: []});
        assert.equal(none.length, 0);
    });

    test("the raw binding checks descriptors itself and throws MIXZ_ERR_INVALID_ARGUMENT", () => {
        const binding = loadBinding();
        const input = new Uint16Array(16);
        const q = new Int8Array(16);
        const scales = new Float32Array(2);
        const good = {
            dtype: "fp16",
            bits: 8,
            blockSize: 8,
            elements: 16,
            paddedElements: 16,
            simd: "scalar",
            threads: 0
        } as const;
        type Descriptor = Parameters<typeof binding.quantize>[3];
        const quantizeWith = (descriptor: Record<string, unknown>, args: unknown[] = [input, q, scales]) => () =>
            (binding.quantize as (...rest: unknown[]) => unknown)(...args, descriptor as unknown as Descriptor);

        throwsNative(() => (binding.quantize as (...rest: unknown[]) => unknown)(input, q, scales), /takes 4 arguments/);
        throwsNative(quantizeWith({...good, dtype: "fp8"}), /dtype/);
        throwsNative(quantizeWith({...good, dtype: undefined}), /dtype/);
        throwsNative(quantizeWith({...good, bits: 3}), /bits/);
        throwsNative(quantizeWith({...good, blockSize: 100}), /power of two/);
        throwsNative(quantizeWith({...good, blockSize: 4}), /power of two/);
        throwsNative(quantizeWith({...good, elements: -1}), /elements/);
        throwsNative(quantizeWith({...good, elements: 2 ** 53}), /elements/);
        throwsNative(quantizeWith({...good, paddedElements: 8}), /paddedElements/);
        throwsNative(quantizeWith({...good, simd: "neon"}), /simd/);
        throwsNative(quantizeWith({...good, threads: 1e6}), /threads/);
        throwsNative(quantizeWith({...good, elements: 15}), /input has 16 elements/);
        throwsNative(quantizeWith(good, [new Float32Array(16), q, scales]), /Uint16Array/);
        throwsNative(quantizeWith(good, [input, new Uint8Array(16), scales]), /Int8Array/);
        throwsNative(quantizeWith(good, [input, new Int8Array(15), scales]), /q has 15/);
        throwsNative(quantizeWith(good, [input, q, new Float32Array(3)]), /scales has 3/);
        throwsNative(quantizeWith(good, [input, q, [0, 0]]), /Float32Array/);
        throwsNative(() => (binding.quantize as (...rest: unknown[]) => unknown)(input, q, scales, null), /object/);

        const out = new Float32Array(16);
        const dq = {bits: 8, blockSize: 8, elements: 16, outDtype: "fp32", simd: "scalar", threads: 0};
        const dequantizeWith = (descriptor: Record<string, unknown>, args: unknown[] = [q, scales, out]) => () =>
            (binding.dequantize as (...rest: unknown[]) => unknown)(...args, descriptor);
        throwsNative(dequantizeWith({...dq, outDtype: "fp64"}), /outDtype/);
        throwsNative(dequantizeWith(dq, [q, scales, new Uint16Array(16)]), /Float32Array/);
        throwsNative(dequantizeWith(dq, [q.subarray(1), scales, out]), /q has 15/);

        const segmentsWith = (segments: unknown, args: unknown[] = [q, scales, out]) => () =>
            (binding.dequantizeSegments as (...rest: unknown[]) => unknown)(...args, {
                bits: 8,
                outDtype: "fp32",
                segments,
                simd: "scalar",
                threads: 0
            });
        const segment = {elements: 8, blockSize: 8, inputOffset: 0, scaleOffset: 0, outputOffset: 0};
        throwsNative(segmentsWith("all"), /segments must be an array/);
        throwsNative(segmentsWith([{...segment, elements: 17}]), /outside/);
        throwsNative(segmentsWith([{...segment, inputOffset: 9}]), /outside/);
        throwsNative(segmentsWith([{...segment, scaleOffset: 2}]), /outside/);
        throwsNative(segmentsWith([{...segment, outputOffset: 9}]), /outside/);
        throwsNative(segmentsWith([segment, {...segment, outputOffset: 7, inputOffset: 8, scaleOffset: 1}]), /overlap/);
        throwsNative(segmentsWith([{...segment, blockSize: 3}]), /power of two/);
        throwsNative(segmentsWith([{...segment, inputOffset: undefined}]), /inputOffset/);
        throwsNative(
            () =>
                (binding.dequantizeSegments as (...rest: unknown[]) => unknown)(new Uint8Array(8), scales, out, {
                    bits: 4,
                    outDtype: "fp32",
                    segments: [{...segment, inputOffset: 1, elements: 4}],
                    simd: "scalar",
                    threads: 0
                }),
            /even/
        );
        throwsNative(
            () =>
                (binding.convertFloats as (...rest: unknown[]) => unknown)(input, new Float32Array(15), {
                    from: "fp16",
                    to: "fp32",
                    simd: "auto",
                    threads: 0
                }),
            /length/
        );
        throwsNative(
            () =>
                (binding.quantBenchmark as (...rest: unknown[]) => unknown)({
                    elements: 16,
                    dtype: "fp16",
                    bits: 8,
                    blockSize: 8,
                    iterations: 0,
                    threads: 0,
                    simd: "auto"
                }),
            /iterations/
        );
        throwsNative(() => (binding.quantInfo as (...rest: unknown[]) => unknown)(1), /takes 0 arguments/);
        if (!hasAvx2) throwsNative(quantizeWith({...good, simd: "avx2"}), /AVX2/);
    });

    test("the raw binding rejects non-finite values asynchronously with the native code", async () => {
        const binding = loadBinding();
        const input = Uint16Array.from([0x7e00, 0, 0, 0, 0, 0, 0, 0]);
        await assert.rejects(
            binding.quantize(input, new Int8Array(8), new Float32Array(1), {
                dtype: "fp16",
                bits: 8,
                blockSize: 8,
                elements: 8,
                paddedElements: 8,
                simd: "auto",
                threads: 0
            }),
            (error: unknown) => (error as {code?: unknown}).code === invalidArgument
        );
    });
});
