// The README's main job (`npm run demo`): a local multi-rank MixZ++ LoRA run on
// configs/mixzpp-local.json over configs/hostfile.local (two "nodes" on this machine).
//
// What runs today: the launcher part. Every rank has joined the coordinator before this line
// runs; the ranks meet once more through the key-value store and a barrier, and rank 0 reports
// the world and the validated config. The training itself needs the ZeRO-3 engine (initialize,
// models, lora), which is not in this build yet: rank 0 says so and the job exits 1.
import {runtime} from "mixz";

const {rank, worldSize, crossRank, crossSize, host, config} = runtime;
await runtime.store.set(`demo/${rank}`, host);
const hosts = (await runtime.store.wait(Array.from({length: worldSize}, (_, r) => `demo/${r}`), 60_000)).map((v) => new TextDecoder().decode(v));
await runtime.store.barrier("demo", 60_000);
if (rank === 0) {
    const zero = config?.zero_optimization;
    console.log(`world: ${worldSize} ranks on ${crossSize} nodes (${[...new Set(hosts)].join(", ")}); this is rank ${rank} on node ${crossRank}`);
    if (zero !== undefined) {
        console.log(`config: ZeRO stage ${zero.stage}, hpZ groups of ${zero.zero_hpz_partition_size}, frozen weights int8: ${zero.zero_quantized_nontrainable_weights}, ` +
            `micro-batch ${config?.train_micro_batch_size_per_gpu} × accumulation ${config?.gradient_accumulation_steps} × world ${worldSize} = ${config?.train_batch_size}`);
    }
    console.error("the MixZ++ LoRA training of this demo is not available yet: the ZeRO-3 engine (initialize, models, lora) is still being built");
    process.exitCode = 1;
}
