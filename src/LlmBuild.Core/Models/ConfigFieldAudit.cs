using System.Text.Json.Nodes;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.Models;

/// <summary>
/// No config field left behind: every field of config.json is either understood by the family (read into
/// <see cref="ModelConfig"/>), known to be irrelevant to inference math, or constrained to values the build implements —
/// a field that changes the math in a way the family does not implement is refused (LLMB0011), and a field nobody knows
/// is a warning (LLMB0012) so new upstream fields surface at once.
/// </summary>
public static class ConfigFieldAudit
{
    /// <summary>Fields that never change inference math: names, ids, dtype hints, cache and training settings.</summary>
    public static readonly IReadOnlySet<string> Irrelevant = new HashSet<string>(StringComparer.Ordinal)
    {
        "_name_or_path", "architectures", "auto_map", "model_type", "transformers_version", "torch_dtype", "dtype",
        "use_cache", "cache_implementation", "bos_token_id", "eos_token_id", "pad_token_id", "initializer_range",
        "attention_dropout", "embd_pdrop", "resid_pdrop", "hidden_dropout", "classifier_dropout", "output_router_logits",
        "router_aux_loss_coef", "quantization_config", "output_attentions", "output_hidden_states", "return_dict",
        "tokenizer_class", "is_encoder_decoder", "id2label", "label2id", "problem_type", "torchscript",
        // Hugging Face splits linears into pretraining_tp slices only to reproduce training numerics; same math.
        "pretraining_tp",
        // Precision and fusion hints of ChatGLM's training code; the float math is the same.
        "bias_dropout_fusion", "attention_softmax_in_fp32", "fp32_residual_connection", "apply_query_key_layer_scaling",
        // MiniCPM's muP base for training-time learning rates; the forward uses dim_model_base and scale_depth.
        "mup_denominator",
    };

    /// <summary>Fields that change the math when set, with the values that leave it unchanged (null = absent/null).</summary>
    private static readonly (string Field, Func<JsonNode?, bool> IsNoOp, string Expected)[] MathIfSet =
    [
        ("attn_logit_softcapping", n => n is null, "null"),
        ("final_logit_softcapping", n => n is null, "null"),
        ("query_pre_attn_scalar", n => n is null, "absent"),
        ("scale_emb", n => n is null || IsNumber(n, 1), "1"),
        ("scale_depth", n => n is null, "absent"),
        ("dim_model_base", n => n is null, "absent"),
        ("rope_local_base_freq", n => n is null, "absent"),
        ("num_experts", n => n is null || IsNumber(n, 0), "0"),
        ("pre_seq_len", n => n is null, "null (no p-tuning prefix)"),
        ("rope_ratio", n => n is null || IsNumber(n, 1), "1"),
        ("add_bias_linear", n => n is null || IsBool(n, false), "false"),
        ("apply_residual_connection_post_layernorm", n => n is null || IsBool(n, false), "false"),
        ("post_layer_norm", n => n is null || IsBool(n, true), "true"),
        ("rmsnorm", n => n is null || IsBool(n, true), "true"),
        ("multi_query_attention", n => n is null || IsBool(n, true), "true"),
        ("original_rope", n => n is null || IsBool(n, true), "true"),
        ("quantization_bit", n => n is null || IsNumber(n, 0), "0"),
        ("prefix_projection", n => n is null || IsBool(n, false), "false"),
        ("attention_bias", _ => true, ""),   // the checkpoint's tensors decide (every tensor must be used)
        ("mlp_bias", _ => true, ""),
        ("add_qkv_bias", _ => true, ""),
    ];

    /// <summary>The fields the family reads into <see cref="ModelConfig"/>.</summary>
    public static IReadOnlySet<string> Understood(ModelFamily family)
    {
        var f = family.ConfigFields;
        var fields = new HashSet<string>(StringComparer.Ordinal)
        {
            f.HiddenSize, f.NumLayers, f.NumHeads, f.NumKvHeads, f.HeadDim, f.IntermediateSize, f.VocabSize, f.RmsNormEps,
            f.RopeTheta, f.MaxPositionEmbeddings, f.HiddenAct, "rope_scaling", "tie_word_embeddings", "partial_rotary_factor",
            "original_max_position_embeddings",
        };
        if (family.SlidingWindow != SlidingWindowLayers.None) fields.Add("sliding_window");
        if (family.SlidingWindow == SlidingWindowLayers.FromMaxWindowLayers) { fields.Add("use_sliding_window"); fields.Add("max_window_layers"); }
        if (family.SlidingWindow == SlidingWindowLayers.AllButEveryPatternth) fields.Add("sliding_window_pattern");
        if (family.Moe is { } moe)
            foreach (string? field in new[] { moe.NumExperts, moe.ExpertsPerToken, moe.ExpertIntermediateSize, moe.NormalizeTopK,
                         moe.SparseStep, moe.DenseLayers, moe.SharedExpertIntermediateSize })
                if (field is not null) fields.Add(field);
        foreach (string? field in new[] { family.EmbeddingScaleField, family.ResidualDepthScaleField, family.LogitWidthBaseField,
                     family.QueryScaleField, family.LocalRopeThetaField, family.AttentionSoftcapField, family.FinalSoftcapField })
            if (field is not null) fields.Add(field);
        if (family.Vision is { } tower)
        {
            fields.Add("vision_config");
            foreach (string field in tower.TokenIdFields) fields.Add(field);
        }
        return fields;
    }

    /// <summary>Refuses fields the family would ignore although they change the math; warns about unknown fields.</summary>
    public static void Audit(JsonObject root, ModelFamily family, ModelConfig config, string source, ICollection<LlmBuildWarning> warnings)
    {
        root = ModelConfig.LanguageModelFields(root, family, source); // a multimodal config's text_config, as the build reads it
        var understood = Understood(family);
        var unknown = new List<string>();
        foreach (var (field, value) in root)
        {
            if (understood.Contains(field) || Irrelevant.Contains(field) || family.IrrelevantConfigFields.Contains(field)) continue;
            if (field == "layer_types") { CheckLayerTypes(value, config, family, source); continue; }
            if (field == "hidden_act" || field == "hidden_activation")
            {
                // Gemma configs carry both; the family's field decides, the other must agree or be absent.
                string? other = value?.GetValueKind() == System.Text.Json.JsonValueKind.String ? value.GetValue<string>() : null;
                if (other is not null && other != config.HiddenAct && !(other == "gelu_pytorch_tanh" || config.HiddenAct == "gelu_pytorch_tanh" && other == "gelu"))
                    throw Refused(source, family, field, value, $"the family computes with {family.ConfigFields.HiddenAct} '{config.HiddenAct}'");
                continue;
            }
            var rule = MathIfSet.FirstOrDefault(r => r.Field == field);
            if (rule.Field is null) { unknown.Add(field); continue; }
            if (!rule.IsNoOp(value))
                throw Refused(source, family, field, value, $"family {family.Name} does not implement it (a no-op value is {rule.Expected})");
        }
        if (unknown.Count > 0)
            warnings.Add(new LlmBuildWarning(ErrorCodes.UnknownConfigField,
                $"{source}: field(s) {string.Join(", ", unknown.Select(u => $"\"{u}\""))} are not known to family {family.Name}; the build does not use them. " +
                "If one changes the model's math, the built model will differ from the checkpoint's."));
    }

    /// <summary>Newer configs list each layer's attention kind; it must match the windows the family computes.</summary>
    private static void CheckLayerTypes(JsonNode? value, ModelConfig config, ModelFamily family, string source)
    {
        if (value is not JsonArray types || types.Count != config.NumLayers)
            throw Refused(source, family, "layer_types", value, $"it must list one attention kind per layer ({config.NumLayers})");
        for (int i = 0; i < types.Count; i++)
        {
            string? kind = types[i]?.GetValueKind() == System.Text.Json.JsonValueKind.String ? types[i]!.GetValue<string>() : null;
            bool sliding = config.WindowOf(i) > 0;
            if (kind != (sliding ? "sliding_attention" : "full_attention"))
                throw Refused(source, family, "layer_types", value,
                    $"layer {i} is '{kind}', but the family's sliding-window rule gives {(sliding ? "sliding_attention" : "full_attention")}");
        }
    }

    private static bool IsNumber(JsonNode n, double expected) =>
        n.GetValueKind() == System.Text.Json.JsonValueKind.Number
        && double.Parse(n.ToJsonString(), System.Globalization.CultureInfo.InvariantCulture) == expected;
    private static bool IsBool(JsonNode n, bool expected) =>
        n.GetValueKind() == (expected ? System.Text.Json.JsonValueKind.True : System.Text.Json.JsonValueKind.False);

    private static LlmBuildException Refused(string source, ModelFamily family, string field, JsonNode? value, string why) =>
        new(ErrorCodes.UnsupportedConfigField,
            $"{source}: \"{field}\": {value?.ToJsonString() ?? "null"} changes the model's math, and {why}. " +
            $"Building would give a model that is not the checkpoint's; this field is not supported for family {family.Name}.", source);
}
