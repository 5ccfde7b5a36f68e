using LlmBuild.Core.Models;
using LlmBuild.Core.Tests.Checkpoints;
using LlmBuild.Core.Tests.Graph;

namespace LlmBuild.Core.Tests.Families;

/// <summary>
/// Mixture-of-experts checkpoints made here: qwen3_moe has no Hugging Face fixture, so a random bf16 checkpoint in
/// the shape of Qwen3-30B-A3B's config.json, scaled down, is written to a temporary model folder (once per test run).
/// </summary>
internal static class MoeCheckpoints
{
    /// <summary>
    /// Qwen3-30B-A3B scaled down: hidden 2048 → 64, 48 → 3 layers, 32/4 → 4/2 heads, head_dim 128 → 32 (still twice
    /// hidden/heads), intermediate_size 6144 → 96, moe_intermediate_size 768 → 32, 128 → 16 experts, top 8 → 4,
    /// norm_topk_prob true, rope_theta 1e6, untied head; plus mlp_only_layers [1] so one layer keeps the dense MLP.
    /// </summary>
    public const string Qwen3MoeConfig = """
    {"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": 64, "num_hidden_layers": 3,
     "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32, "intermediate_size": 96, "moe_intermediate_size": 32,
     "num_experts": 16, "num_experts_per_tok": 4, "norm_topk_prob": true, "decoder_sparse_step": 1, "mlp_only_layers": [1],
     "vocab_size": 512, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "max_position_embeddings": 40960,
     "tie_word_embeddings": false, "torch_dtype": "bfloat16", "hidden_act": "silu", "bos_token_id": 500, "eos_token_id": 501,
     "use_sliding_window": false, "sliding_window": null, "max_window_layers": 48, "attention_bias": false}
    """;

    private static readonly Lazy<string> Qwen3Moe = new(() => Write("qwen3_moe", Qwen3MoeConfig, omit: null));

    /// <summary>The folder of the scaled-down qwen3_moe checkpoint (config.json + model.safetensors).</summary>
    public static string Qwen3MoeDir => Qwen3Moe.Value;

    /// <summary>
    /// Writes config.json and a bf16 model.safetensors with every tensor the family declares for the config, leaving
    /// out <paramref name="omit"/> (a tensor name) if given. Router rows are spread wider than other weights so that,
    /// as in trained models, each token's top experts stand clear of the rest.
    /// </summary>
    public static string Write(string name, string configJson, string? omit, IEnumerable<TestFiles.Tensor>? extra = null)
    {
        string dir = Path.Combine(Path.GetTempPath(), "llmbuild-moe-checkpoints", name);
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "config.json"), configJson);
        var config = ModelConfig.Load(dir);
        var family = ModelFamilies.Get(config.ModelType);
        MoeConfig moe = config.Moe!;
        var rng = new Random(name.Aggregate(23, (a, ch) => a * 31 + ch));
        var tensors = new List<TestFiles.Tensor>();
        int h = config.HiddenSize, qd = config.QDim, kvd = config.KvDim, d = config.HeadDim, inter = config.IntermediateSize;
        int ie = moe.ExpertIntermediateSize, experts = moe.NumExperts;
        void Add(string tensor, long[] shape, float center, float spread)
        {
            if (tensor == omit) return;
            var bits = new ushort[shape.Aggregate(1L, (a, b) => a * b)];
            for (int i = 0; i < bits.Length; i++)
                bits[i] = (ushort)(BitConverter.SingleToUInt32Bits(TestWeightSource.ToBf16(center + spread * (float)(rng.NextDouble() * 2 - 1))) >> 16);
            tensors.Add(new TestFiles.Tensor(tensor, "BF16", shape, TestFiles.Bytes(bits)));
        }
        Add(family.TensorName(WeightRole.Embedding), [config.VocabSize, h], 0, 0.5f);
        for (int l = 0; l < config.NumLayers; l++)
        {
            string N(WeightRole r, int e = 0) => family.TensorName(r, l, e);
            Add(N(WeightRole.InputNorm), [h], 1, 0.2f);
            Add(N(WeightRole.PostAttentionNorm), [h], 1, 0.2f);
            Add(N(WeightRole.QProj), [qd, h], 0, 0.15f);
            Add(N(WeightRole.KProj), [kvd, h], 0, 0.15f);
            Add(N(WeightRole.VProj), [kvd, h], 0, 0.15f);
            Add(N(WeightRole.OProj), [h, qd], 0, 0.15f);
            if (family.Has(WeightRole.QNorm))
            {
                Add(N(WeightRole.QNorm), [d], 1, 0.2f);
                Add(N(WeightRole.KNorm), [d], 1, 0.2f);
            }
            if (!config.IsSparseLayer(l))
            {
                Add(N(WeightRole.MlpGate), [inter, h], 0, 0.15f);
                Add(N(WeightRole.MlpUp), [inter, h], 0, 0.15f);
                Add(N(WeightRole.MlpDown), [h, inter], 0, 0.1f);
                continue;
            }
            Add(N(WeightRole.MoeRouter), [experts, h], 0, 0.6f);
            for (int e = 0; e < experts; e++)
            {
                Add(N(WeightRole.ExpertGate, e), [ie, h], 0, 0.15f);
                Add(N(WeightRole.ExpertUp, e), [ie, h], 0, 0.15f);
                Add(N(WeightRole.ExpertDown, e), [h, ie], 0, 0.15f);
            }
        }
        Add(family.TensorName(WeightRole.FinalNorm), [h], 1, 0.2f);
        Add(family.TensorName(WeightRole.LmHead), [config.VocabSize, h], 0, 0.2f);
        TestFiles.WriteSafetensors(Path.Combine(dir, "model.safetensors"), tensors.Concat(extra ?? []));
        return dir;
    }
}
