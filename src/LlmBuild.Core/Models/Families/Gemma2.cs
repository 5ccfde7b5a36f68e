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

/// <summary>The tensor names Gemma 2 and 3 share (the text model's <c>model.*</c> names).</summary>
internal static class Gemma
{
    public static readonly IReadOnlyDictionary<WeightRole, string> Names = new Dictionary<WeightRole, string>
    {
        [WeightRole.Embedding] = "model.embed_tokens.weight",
        [WeightRole.InputNorm] = "model.layers.{0}.input_layernorm.weight",
        [WeightRole.QProj] = "model.layers.{0}.self_attn.q_proj.weight",
        [WeightRole.KProj] = "model.layers.{0}.self_attn.k_proj.weight",
        [WeightRole.VProj] = "model.layers.{0}.self_attn.v_proj.weight",
        [WeightRole.OProj] = "model.layers.{0}.self_attn.o_proj.weight",
        [WeightRole.AttentionOutputNorm] = "model.layers.{0}.post_attention_layernorm.weight",
        [WeightRole.PostAttentionNorm] = "model.layers.{0}.pre_feedforward_layernorm.weight",
        [WeightRole.MlpGate] = "model.layers.{0}.mlp.gate_proj.weight",
        [WeightRole.MlpUp] = "model.layers.{0}.mlp.up_proj.weight",
        [WeightRole.MlpDown] = "model.layers.{0}.mlp.down_proj.weight",
        [WeightRole.MlpOutputNorm] = "model.layers.{0}.post_feedforward_layernorm.weight",
        [WeightRole.FinalNorm] = "model.norm.weight",
        [WeightRole.LmHead] = "lm_head.weight",
    };
}
