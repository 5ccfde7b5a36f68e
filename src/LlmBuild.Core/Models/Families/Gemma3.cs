namespace LlmBuild.Core.Models.Families;

/// <summary>
/// Gemma 3 text (<c>gemma3_text</c>): Gemma 2's block plus a (1 + w) RMSNorm on each head of q and k before RoPE;
/// sliding-window layers (all but every <c>sliding_window_pattern</c>-th) use RoPE base <c>rope_local_base_freq</c>
/// without scaling, the global layers <c>rope_theta</c> with rope_scaling. Its soft-capping fields are read too (null in
/// released configs).
/// </summary>
public static class Gemma3
{
    public static ModelFamily Family { get; } = Gemma2.Family with
    {
        Name = "gemma3",
        ModelTypes = ["gemma3_text"],
        WeightNames = LlamaLayout.With(Gemma.Names, new Dictionary<WeightRole, string>
        {
            [WeightRole.QNorm] = "model.layers.{0}.self_attn.q_norm.weight",
            [WeightRole.KNorm] = "model.layers.{0}.self_attn.k_norm.weight",
        }),
        SlidingWindow = SlidingWindowLayers.AllButEveryPatternth,
        LocalRopeThetaField = "rope_local_base_freq",
    };
}
