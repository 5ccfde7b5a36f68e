using static LlmBuild.Core.Models.LlamaLayout;

namespace LlmBuild.Core.Models.Families;

/// <summary>
/// Qwen1.5-MoE / Qwen2-MoE: qwen2's attention (q/k/v biases) with a mixture-of-experts MLP on sparse layers — a router
/// softmax over every expert, the top <c>num_experts_per_tok</c> experts' SwiGLU outputs weighted by their probabilities
/// (renormalised only with <c>norm_topk_prob</c>), plus a shared expert scaled by sigmoid(<c>shared_expert_gate</c>).
/// Layers in <c>mlp_only_layers</c> or off the <c>decoder_sparse_step</c> keep llama's dense MLP.
/// </summary>
public static class Qwen2Moe
{
    public static ModelFamily Family { get; } = new()
    {
        Name = "qwen2_moe",
        ModelTypes = ["qwen2_moe"],
        WeightNames = With(Qwen2.Family.WeightNames, MoeLayout.RoutedExperts, MoeLayout.SharedExpert),
        SlidingWindow = SlidingWindowLayers.FromMaxWindowLayers,
        IgnorableTensors = InverseFrequencyBuffers,
        Moe = new MoeDeclaration(SharedExpertIntermediateSize: "shared_expert_intermediate_size"),
    };
}
