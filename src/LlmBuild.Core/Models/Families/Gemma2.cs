namespace LlmBuild.Core.Models.Families;

/// <summary>
/// Gemma 2: embeddings × √hidden, (1 + w) RMSNorm, four norms per layer (input, attention output, pre- and
/// post-feed-forward), gelu_pytorch_tanh MLP, attention scaled by <c>query_pre_attn_scalar</c>^−½, tanh soft-capping of
/// the attention scores and of the final logits, a sliding window on even layers, tied embeddings.
/// </summary>
public static class Gemma2
{
    public static ModelFamily Family { get; } = new()
    {
        Name = "gemma2",
        ModelTypes = ["gemma2"],
        ConfigFields = new ConfigFieldNames(HiddenAct: "hidden_activation"),
        WeightNames = Gemma.Names,
        SlidingWindow = SlidingWindowLayers.EvenLayers,
        TieWordEmbeddingsDefault = true,
        EmbeddingTimesSqrtHidden = true,
        NormWeightOffset = 1.0,
        QueryScaleField = "query_pre_attn_scalar",
        AttentionSoftcapField = "attn_logit_softcapping",
        FinalSoftcapField = "final_logit_softcapping",
        IgnorableTensors = LlamaLayout.InverseFrequencyBuffers,
    };
}

/// <summary>
/// The tensor names Gemma 2 and 3 share: llama's layout, except that gemma's post_attention_layernorm normalises the
/// attention output and pre_feedforward_layernorm is the norm before the MLP (llama's post-attention role).
/// </summary>
internal static class Gemma
{
    public static readonly IReadOnlyDictionary<WeightRole, string> Names = LlamaLayout.With(
        LlamaLayout.Names.Where(n => n.Key != WeightRole.PostAttentionNorm),
        new Dictionary<WeightRole, string>
        {
            [WeightRole.AttentionOutputNorm] = "model.layers.{0}.post_attention_layernorm.weight",
            [WeightRole.PostAttentionNorm] = "model.layers.{0}.pre_feedforward_layernorm.weight",
            [WeightRole.MlpOutputNorm] = "model.layers.{0}.post_feedforward_layernorm.weight",
        });
}
