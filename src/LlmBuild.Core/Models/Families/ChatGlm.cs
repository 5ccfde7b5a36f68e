namespace LlmBuild.Core.Models.Families;

/// <summary>
/// ChatGLM3 / GLM-4 (<c>transformer.*</c> names): fused <c>query_key_value</c> (rows q | k | v, with bias, multi-query
/// groups as kv heads), fused SwiGLU <c>dense_h_to_4h</c> (rows gate | up), RoPE on the first half of each head in
/// interleaved pairs, RMSNorm, a separate output layer.
/// </summary>
public static class ChatGlm
{
    public static ModelFamily Family { get; } = new()
    {
        Name = "chatglm",
        ModelTypes = ["chatglm"],
        ConfigFields = new ConfigFieldNames(
            NumLayers: "num_layers", NumKvHeads: "multi_query_group_num", HeadDim: "kv_channels",
            IntermediateSize: "ffn_hidden_size", VocabSize: "padded_vocab_size", RmsNormEps: "layernorm_epsilon",
            MaxPositionEmbeddings: "seq_length"),
        WeightNames = new Dictionary<WeightRole, string>
        {
            [WeightRole.Embedding] = "transformer.embedding.word_embeddings.weight",
            [WeightRole.InputNorm] = "transformer.encoder.layers.{0}.input_layernorm.weight",
            [WeightRole.OProj] = "transformer.encoder.layers.{0}.self_attention.dense.weight",
            [WeightRole.PostAttentionNorm] = "transformer.encoder.layers.{0}.post_attention_layernorm.weight",
            [WeightRole.MlpDown] = "transformer.encoder.layers.{0}.mlp.dense_4h_to_h.weight",
            [WeightRole.FinalNorm] = "transformer.encoder.final_layernorm.weight",
            [WeightRole.LmHead] = "transformer.output_layer.weight",
        },
        FusedWeights =
        [
            new("transformer.encoder.layers.{0}.self_attention.query_key_value.weight", [WeightRole.QProj, WeightRole.KProj, WeightRole.VProj]),
            new("transformer.encoder.layers.{0}.self_attention.query_key_value.bias", [WeightRole.QBias, WeightRole.KBias, WeightRole.VBias]),
            new("transformer.encoder.layers.{0}.mlp.dense_h_to_4h.weight", [WeightRole.MlpGate, WeightRole.MlpUp]),
        ],
        OptionalRoles = new HashSet<WeightRole> { WeightRole.QBias, WeightRole.KBias, WeightRole.VBias },
        RopeMode = RopeMode.Interleaved,
        DefaultRotaryFraction = 0.5,
        IgnorableTensors = ["transformer.rotary_pos_emb.inv_freq"],
        // The tokenizer's size; the embedding and output layer have padded_vocab_size rows.
        IrrelevantConfigFields = ["vocab_size"],
    };
}
