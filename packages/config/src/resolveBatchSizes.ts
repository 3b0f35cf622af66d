/**
 * DeepSpeed's batch arithmetic: train_batch_size = micro × accumulation × world, where
 * "train" is train_batch_size, "micro" train_micro_batch_size_per_gpu, "accumulation"
 * gradient_accumulation_steps and "world" the data-parallel world size. Any two of train, micro
 * and accumulation determine the third (DeepSpeed `_set_batch_related_parameters`):
 *   all three → checked;   train + micro → accumulation = train / (micro × world);
 *   train + accumulation → micro = train / (accumulation × world);   micro + accumulation → train;
 *   train alone → accumulation 1, micro = train / world;   micro alone → accumulation 1.
 * At least one of train and micro is required. "auto" counts as not given.
 *
 * Without the world size, what does not involve it is still checked (train must be a multiple of
 * the product of the others given), values that need it are left null, and the rule is listed
 * as unchecked.
 */
import {ErrorCodes} from "@mixz/protocol";
import {UncheckedRules} from "./api.js";
import type {ProblemCollector} from "./ProblemCollector.js";

const TRAIN = "train_batch_size";
const MICRO = "train_micro_batch_size_per_gpu";
const ACCUMULATION = "gradient_accumulation_steps";

/** Replaces the three batch keys of `data` by numbers, or null where the unknown world size is needed. */
export function resolveBatchSizes(data: Record<string, unknown>, world: number | undefined, problems: ProblemCollector): void {
    const given = (key: string): number | undefined | "invalid" => {
        const value = data[key];
        if (value === undefined || value === "auto") return undefined;
        if (problems.hasErrorAt([key]) || !Number.isInteger(value) || (value as number) < 1) return "invalid";
        return value as number;
    };
    const train = given(TRAIN);
    const micro = given(MICRO);
    const accumulation = given(ACCUMULATION);
    if (train === "invalid" || micro === "invalid" || accumulation === "invalid") return; // the schema pass reported it

    const set = (t: number | null, m: number | null, a: number | null): void => {
        data[TRAIN] = t;
        data[MICRO] = m;
        data[ACCUMULATION] = a;
    };
    /** Reports train not divisible by the product of `factors` ([name, value] pairs). */
    const notDivisible = (...factors: readonly (readonly [string, number])[]): void => {
        const product = factors.reduce((p, [, value]) => p * value, 1);
        const divisor = factors.map(([name, value]) => `${name} ${value}`).join(" × ");
        const equals = factors.length > 1 ? ` = ${product}` : "";
        problems.error(ErrorCodes.configConflict, [TRAIN], `${train} is not divisible by ${divisor}${equals}`);
    };

    if (train === undefined && micro === undefined) {
        const auto = [TRAIN, MICRO].find((key) => data[key] === "auto");
        if (auto !== undefined) {
            problems.error(
                ErrorCodes.configUnresolvedAuto,
                [auto],
                `"auto" cannot be derived here: give ${TRAIN} or ${MICRO} a number`
            );
        } else {
            problems.error(ErrorCodes.configConflict, [], `set ${TRAIN} or ${MICRO}`, "value");
        }
        return;
    }

    if (world === undefined) {
        problems.note(UncheckedRules.batch);
        if (train !== undefined && micro !== undefined && accumulation !== undefined) {
            const product = micro * accumulation;
            if (train % product !== 0) notDivisible([MICRO, micro], [ACCUMULATION, accumulation]);
            else {
                problems.unchecked[problems.unchecked.indexOf(UncheckedRules.batch)] =
                    `${UncheckedRules.batch}; the batch sizes imply a world size of ${train / product}`;
            }
            set(train, micro, accumulation);
        } else if (train !== undefined && micro !== undefined) {
            if (train % micro !== 0) notDivisible([MICRO, micro]);
            set(train, micro, null);
        } else if (train !== undefined && accumulation !== undefined) {
            if (train % accumulation !== 0) notDivisible([ACCUMULATION, accumulation]);
            set(train, null, accumulation);
        } else if (train !== undefined) {
            set(train, null, 1);
        } else {
            set(null, micro!, accumulation ?? 1);
        }
        return;
    }

    if (train !== undefined && micro !== undefined && accumulation !== undefined) {
        const product = micro * accumulation * world;
        if (train !== product) {
            problems.error(
                ErrorCodes.configConflict,
                [TRAIN],
                `${train} must equal ${MICRO} ${micro} × ${ACCUMULATION} ${accumulation} × world size ${world} = ${product}`
            );
        }
        set(train, micro, accumulation);
    } else if (train !== undefined && micro !== undefined) {
        const product = micro * world;
        if (train % product !== 0) notDivisible([MICRO, micro], ["world size", world]);
        set(train, micro, train / product);
    } else if (train !== undefined && accumulation !== undefined) {
        const product = accumulation * world;
        if (train % product !== 0) notDivisible([ACCUMULATION, accumulation], ["world size", world]);
        set(train, train / product, accumulation);
    } else if (train !== undefined) {
        if (train % world !== 0) notDivisible(["world size", world]);
        set(train, train / world, 1);
    } else {
        const accumulationSteps = accumulation ?? 1;
        set(micro! * accumulationSteps * world, micro!, accumulationSteps);
    }
}
