import type {ResolvedOptimizerConfig} from "./api.js";

/**
 * Whether the optimizer decouples weight decay (AdamW), as DeepSpeed decides it: type "adamw"
 * always does; type "adam" does unless params.adam_w_mode is false (DeepSpeed's default is true).
 */
export function effectiveAdamWMode(optimizer: ResolvedOptimizerConfig): boolean {
    return optimizer.type === "adamw" || optimizer.params.adam_w_mode;
}
