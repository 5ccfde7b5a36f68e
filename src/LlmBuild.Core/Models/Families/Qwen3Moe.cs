using static LlmBuild.Core.Models.LlamaLayout;

namespace LlmBuild.Core.Models.Families;

/// <summary>
/// Qwen3-MoE (Qwen3-30B-A3B, Qwen3-235B-A22B): qwen3's attention (per-head q/k RMSNorm, head_dim from config.json) with
/// a mixture-of-experts MLP on sparse layers — router softmax over every expert, top <c>num_experts_per_tok</c>,
/// renormalised with <c>norm_topk_prob</c> — and no shared expert.
/// </summary>
public static class Qwen3Moe
{
    public static ModelFamily Family { get; } = new()
    {
        Name = "qwen3_moe",
        ModelTypes = ["qwen3_moe"],
        WeightNames = With(Qwen3.Family.WeightNames, MoeLayout.RoutedExperts),
        SlidingWindow = SlidingWindowLayers.FromMaxWindowLayers,
        IgnorableTensors = InverseFrequencyBuffers,
        Moe = new MoeDeclaration(),
    };
}
