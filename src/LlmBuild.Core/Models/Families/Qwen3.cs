using static LlmBuild.Core.Models.LlamaLayout;

namespace LlmBuild.Core.Models.Families;

/// <summary>Qwen3: llama's block with a per-head RMSNorm on queries and keys before RoPE, head_dim from config.json.</summary>
public static class Qwen3
{
    public static ModelFamily Family { get; } = new()
    {
        Name = "qwen3",
        ModelTypes = ["qwen3"],
        WeightNames = With(Names, new Dictionary<WeightRole, string>
        {
            [WeightRole.QNorm] = "model.layers.{0}.self_attn.q_norm.weight",
            [WeightRole.KNorm] = "model.layers.{0}.self_attn.k_norm.weight",
        }),
        SlidingWindow = SlidingWindowLayers.FromMaxWindowLayers,
        IgnorableTensors = InverseFrequencyBuffers,
    };
}
