using System.Globalization;
using System.Text.Json.Nodes;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.Models;

/// <summary>What a checkpoint tensor is for, independent of how a family names it.</summary>
public enum WeightRole
{
    Embedding,
    InputNorm,
    QProj, QBias, KProj, KBias, VProj, VBias, OProj, OBias,
    /// <summary>Per-head RMSNorm on queries/keys before RoPE (qwen3, gemma3).</summary>
    QNorm, KNorm,
    /// <summary>The norm before the MLP (llama's post_attention_layernorm, gemma's pre_feedforward_layernorm).</summary>
    PostAttentionNorm,
    /// <summary>Gemma: a norm on the attention output before the residual add (its post_attention_layernorm).</summary>
    AttentionOutputNorm,
    /// <summary>Gemma: a norm on the MLP output before the residual add (its post_feedforward_layernorm).</summary>
    MlpOutputNorm,
    MlpGate, MlpGateBias, MlpUp, MlpUpBias, MlpDown, MlpDownBias,
    FinalNorm,
    LmHead,
    /// <summary>Mixture-of-experts router [num_experts, H] (<c>mlp.gate</c>): scores every expert for each token.</summary>
    MoeRouter,
    /// <summary>One routed expert's SwiGLU linears; each entry carries its expert index (WeightEntry.Expert).</summary>
    ExpertGate, ExpertUp, ExpertDown,
    /// <summary>The shared expert every token goes through (qwen2_moe) and its [1, H] sigmoid gate.</summary>
    SharedExpertGate, SharedExpertUp, SharedExpertDown, SharedExpertSigmoidGate,
    /// <summary>A vision-tower tensor (the <c>vit</c> owner); its <see cref="Plan.WeightEntry.Vision"/> says which.</summary>
    Vision,
}

/// <summary>Where a family keeps each architecture field in config.json.</summary>
public sealed record ConfigFieldNames(
    string HiddenSize = "hidden_size",
    string NumLayers = "num_hidden_layers",
    string NumHeads = "num_attention_heads",
    string NumKvHeads = "num_key_value_heads",
    string HeadDim = "head_dim",
    string IntermediateSize = "intermediate_size",
    string VocabSize = "vocab_size",
    string RmsNormEps = "rms_norm_eps",
    string RopeTheta = "rope_theta",
    string MaxPositionEmbeddings = "max_position_embeddings",
    string HiddenAct = "hidden_act");

/// <summary>How RoPE pairs the dimensions of a head: rotate_half (first/second half) or interleaved (even/odd).</summary>
public enum RopeMode { RotateHalf, Interleaved }

/// <summary>Which layers attend through a sliding window of config.json's <c>sliding_window</c> keys.</summary>
public enum SlidingWindowLayers
{
    /// <summary>No layer: the family has no sliding window (a <c>sliding_window</c> field is refused unless it is a no-op).</summary>
    None,
    /// <summary>Every layer (mistral): key j is visible to a query at position p when p − j &lt; window.</summary>
    All,
    /// <summary>Layers ≥ <c>max_window_layers</c>, when <c>use_sliding_window</c> is true (qwen2, qwen3).</summary>
    FromMaxWindowLayers,
    /// <summary>Even layers (gemma2: 0, 2, …); odd layers attend globally.</summary>
    EvenLayers,
    /// <summary>All but every <c>sliding_window_pattern</c>-th layer (gemma3: layer i slides unless (i + 1) % pattern == 0).</summary>
    AllButEveryPatternth,
}

/// <summary>
/// A mixture-of-experts MLP, as the config.json fields that shape it (Hugging Face's qwen2_moe / qwen3_moe names). The
/// family's weight map names the router, the routed experts (<c>{1}</c> in a pattern is the expert index) and, when
/// <see cref="SharedExpertIntermediateSize"/> is set, the shared expert and its sigmoid gate. Layers that are not sparse
/// (<see cref="DenseLayers"/>, or off the <see cref="SparseStep"/>) keep the family's dense MLP of intermediate_size.
/// </summary>
public sealed record MoeDeclaration(
    string NumExperts = "num_experts",
    string ExpertsPerToken = "num_experts_per_tok",
    string ExpertIntermediateSize = "moe_intermediate_size",
    string NormalizeTopK = "norm_topk_prob",
    string SparseStep = "decoder_sparse_step",
    string DenseLayers = "mlp_only_layers",
    string? SharedExpertIntermediateSize = null)
{
    /// <summary>Whether the top-k routing weights are renormalised to sum to 1 when config.json does not say.</summary>
    public bool NormalizeTopKDefault { get; init; }
}

/// <summary>
/// A fused checkpoint tensor that holds several roles' weights stacked along its rows (phi3's <c>qkv_proj</c> and
/// <c>gate_up_proj</c>, chatglm's <c>query_key_value</c>): the parts follow each other in the order given, each as
/// many rows as its role's shape says. <c>{0}</c> in the pattern is the layer index.
/// </summary>
public sealed record FusedWeight(string Pattern, IReadOnlyList<WeightRole> Parts);

/// <summary>
/// A model family: the model_types it covers, its config field names, its weight-role map (role → checkpoint tensor
/// name, <c>{0}</c> = layer index, fused tensors declared with how they split) and the block's structural features
/// as data. Each family is one file in <c>Models/Families/</c>; <see cref="ModelFamilies"/> lists them. Resolve,
/// quantize, the graph builder and the reference forward read these declarations and never test a family's name.
/// </summary>
public sealed record ModelFamily
{
    public required string Name { get; init; }
    public required IReadOnlyList<string> ModelTypes { get; init; }
    public ConfigFieldNames ConfigFields { get; init; } = new();
    public required IReadOnlyDictionary<WeightRole, string> WeightNames { get; init; }
    /// <summary>Roles the family may omit (e.g. biases in a llama config with attention_bias=false).</summary>
    public IReadOnlySet<WeightRole> OptionalRoles { get; init; } = new HashSet<WeightRole>();
    /// <summary>Fused tensors: the roles they hold are read as row ranges of one checkpoint tensor.</summary>
    public IReadOnlyList<FusedWeight> FusedWeights { get; init; } = [];
    public RopeMode RopeMode { get; init; } = RopeMode.RotateHalf;
    /// <summary>The fraction of each head that RoPE rotates when config.json does not say (<c>partial_rotary_factor</c>).</summary>
    public double DefaultRotaryFraction { get; init; } = 1.0;
    public SlidingWindowLayers SlidingWindow { get; init; } = SlidingWindowLayers.None;
    public bool TieWordEmbeddingsDefault { get; init; }
    /// <summary>muP-style scalings (minicpm): config fields of the embedding multiplier, the residual-branch depth scale
    /// (divided by √layers) and the base width that divides the final hidden state by hidden_size / base. Null: absent.</summary>
    public string? EmbeddingScaleField { get; init; }
    public string? ResidualDepthScaleField { get; init; }
    public string? LogitWidthBaseField { get; init; }
    /// <summary>Gemma: embeddings × √hidden_size.</summary>
    public bool EmbeddingTimesSqrtHidden { get; init; }
    /// <summary>Gemma's norms multiply by (offset + w): 1 for its (1 + w) RMSNorm. The build stores such weights in f32.</summary>
    public double NormWeightOffset { get; init; }
    /// <summary>The config field whose −½ power scales attention scores instead of head_dim^−½ (gemma's query_pre_attn_scalar).</summary>
    public string? QueryScaleField { get; init; }
    /// <summary>The config field of the RoPE base of sliding-window layers (gemma3's rope_local_base_freq; no rope_scaling there).</summary>
    public string? LocalRopeThetaField { get; init; }
    /// <summary>Config fields of tanh soft-capping: of the attention scores and of the final logits (gemma2).</summary>
    public string? AttentionSoftcapField { get; init; }
    public string? FinalSoftcapField { get; init; }
    /// <summary>
    /// Checkpoint tensors known to carry no model information (buffers such as <c>rotary_emb.inv_freq</c>), as patterns
    /// with <c>*</c> wildcards; every other tensor must be consumed by a role.
    /// </summary>
    public IReadOnlyList<string> IgnorableTensors { get; init; } = [];
    /// <summary>
    /// A multimodal checkpoint's language model (gemma3): config.json keeps the language model's fields in this nested
    /// object; the build reads them over <see cref="TextConfigDefaults"/> (the text config class's defaults, which
    /// released configs rely on) and over the top-level fields (dtype, end-of-sequence ids). Null: the fields are top-level.
    /// </summary>
    public string? TextConfigField { get; init; }
    public JsonObject? TextConfigDefaults { get; init; }
    /// <summary>
    /// Tensors of the towers a multimodal checkpoint has but this family does not build (vision tower, projector), as
    /// <c>*</c> patterns: accounted for as ignored, and listed in a warning (LLMB0160) so the omission is never silent.
    /// </summary>
    public IReadOnlyList<string> UnbuiltTowerTensors { get; init; } = [];
    /// <summary>
    /// Name layouts newer transformers save this family's checkpoints in (its <c>_checkpoint_conversion_mapping</c>): each
    /// saved prefix with the declared prefix it stands for. <see cref="SavedNameCheckpoint"/> presents such tensors under
    /// the declared names, so one weight map reads both layouts.
    /// </summary>
    public IReadOnlyList<(string Saved, string Declared)> SavedNamePrefixes { get; init; } = [];
    /// <summary>Config fields of this family that do not change the math (beyond <see cref="ConfigFieldAudit.Irrelevant"/>).</summary>
    public IReadOnlyList<string> IrrelevantConfigFields { get; init; } = [];
    /// <summary>The mixture-of-experts MLP of sparse layers; null for dense families.</summary>
    public MoeDeclaration? Moe { get; init; }
    /// <summary>The vision tower of a vision-language family (DESIGN §13); null for text-only families.</summary>
    public VisionTowerDeclaration? Vision { get; init; }
    /// <summary>M-RoPE: the LLM rotates each head by three position components (temporal, height, width), split over the
    /// frequencies by rope_scaling's <c>mrope_section</c>.</summary>
    public bool MultimodalRope { get; init; }

    public bool Has(WeightRole role) => WeightNames.ContainsKey(role) || FusedWeights.Any(f => f.Parts.Contains(role));

    /// <summary>The checkpoint tensor name of a role (layer is ignored for model-level roles). A fused role gets the
    /// name of its row range as a view of the fused tensor presents it (see <see cref="FamilyCheckpoint"/>).</summary>
    public string TensorName(WeightRole role, int layer = 0, int expert = 0)
    {
        if (WeightNames.TryGetValue(role, out string? pattern)) return string.Format(CultureInfo.InvariantCulture, pattern, layer, expert);
        if (FusedWeights.FirstOrDefault(f => f.Parts.Contains(role)) is { } fused)
            return FusedPartName(string.Format(CultureInfo.InvariantCulture, fused.Pattern, layer), role);
        throw new InvalidOperationException($"Family {Name} has no weight role {role}.");
    }

    /// <summary>
    /// The name a fused tensor's part has in a <see cref="FamilyCheckpoint"/>: the role inserted before the suffix, as in
    /// "model.layers.0.self_attn.qkv_proj.qproj.weight" — a name no checkpoint uses, ending like a real weight's.
    /// </summary>
    public static string FusedPartName(string fusedTensor, WeightRole role)
    {
        int dot = fusedTensor.LastIndexOf('.');
        string tag = role.ToString().ToLowerInvariant();
        return dot < 0 ? $"{fusedTensor}.{tag}" : $"{fusedTensor[..dot]}.{tag}{fusedTensor[dot..]}";
    }

    /// <summary>True for roles that exist once per decoder layer.</summary>
    public static bool IsLayerRole(WeightRole role) => role is not (WeightRole.Embedding or WeightRole.FinalNorm or WeightRole.LmHead or WeightRole.Vision);

    /// <summary>True for the RMSNorm weights (the ones <see cref="NormWeightOffset"/> applies to).</summary>
    public static bool IsNorm(WeightRole role) => role is WeightRole.InputNorm or WeightRole.PostAttentionNorm or WeightRole.AttentionOutputNorm
        or WeightRole.MlpOutputNorm or WeightRole.FinalNorm or WeightRole.QNorm or WeightRole.KNorm;

    /// <summary>True for the linear layers of a block (the tensors weight-only quantization applies to).</summary>
    public static bool IsBlockLinear(WeightRole role) =>
        role is WeightRole.QProj or WeightRole.KProj or WeightRole.VProj or WeightRole.OProj
            or WeightRole.MlpGate or WeightRole.MlpUp or WeightRole.MlpDown
            or WeightRole.ExpertGate or WeightRole.ExpertUp or WeightRole.ExpertDown
            or WeightRole.SharedExpertGate or WeightRole.SharedExpertUp or WeightRole.SharedExpertDown;

    /// <summary>True for the dense MLP's weights (what a sparse layer replaces by its experts).</summary>
    public static bool IsDenseMlpRole(WeightRole role) =>
        role is WeightRole.MlpGate or WeightRole.MlpUp or WeightRole.MlpDown or WeightRole.MlpGateBias or WeightRole.MlpUpBias or WeightRole.MlpDownBias;

    /// <summary>True for the weights of a sparse (mixture-of-experts) layer's MLP.</summary>
    public static bool IsMoeRole(WeightRole role) =>
        role is WeightRole.MoeRouter or WeightRole.SharedExpertSigmoidGate or WeightRole.SharedExpertGate or WeightRole.SharedExpertUp
            or WeightRole.SharedExpertDown || IsExpertRole(role);

    /// <summary>True for the roles that exist once per routed expert.</summary>
    public static bool IsExpertRole(WeightRole role) => role is WeightRole.ExpertGate or WeightRole.ExpertUp or WeightRole.ExpertDown;

    /// <summary>True when <paramref name="name"/> belongs to a tower the family does not build.</summary>
    public bool IsUnbuiltTower(string name) => UnbuiltTowerTensors.Any(p => WildcardMatch(p, name));

    /// <summary>True when <paramref name="name"/> matches one of <see cref="IgnorableTensors"/>.</summary>
    public bool IsIgnorable(string name) => IgnorableTensors.Any(p => WildcardMatch(p, name));

    /// <summary>Matches a pattern where <c>*</c> stands for any run of characters.</summary>
    public static bool WildcardMatch(string pattern, string name)
    {
        string[] parts = pattern.Split('*');
        if (parts.Length == 1) return pattern == name;
        if (!name.StartsWith(parts[0], StringComparison.Ordinal) || !name.EndsWith(parts[^1], StringComparison.Ordinal)) return false;
        int at = parts[0].Length, end = name.Length - parts[^1].Length;
        if (at > end) return false;
        for (int i = 1; i < parts.Length - 1; i++)
        {
            int found = name.IndexOf(parts[i], at, end - at, StringComparison.Ordinal);
            if (found < 0) return false;
            at = found + parts[i].Length;
        }
        return true;
    }
}

/// <summary>Weight-name maps shared by the families that use Hugging Face's llama layout.</summary>
public static class LlamaLayout
{
    public static readonly IReadOnlyDictionary<WeightRole, string> Names = new Dictionary<WeightRole, string>
    {
        [WeightRole.Embedding] = "model.embed_tokens.weight",
        [WeightRole.InputNorm] = "model.layers.{0}.input_layernorm.weight",
        [WeightRole.QProj] = "model.layers.{0}.self_attn.q_proj.weight",
        [WeightRole.KProj] = "model.layers.{0}.self_attn.k_proj.weight",
        [WeightRole.VProj] = "model.layers.{0}.self_attn.v_proj.weight",
        [WeightRole.OProj] = "model.layers.{0}.self_attn.o_proj.weight",
        [WeightRole.PostAttentionNorm] = "model.layers.{0}.post_attention_layernorm.weight",
        [WeightRole.MlpGate] = "model.layers.{0}.mlp.gate_proj.weight",
        [WeightRole.MlpUp] = "model.layers.{0}.mlp.up_proj.weight",
        [WeightRole.MlpDown] = "model.layers.{0}.mlp.down_proj.weight",
        [WeightRole.FinalNorm] = "model.norm.weight",
        [WeightRole.LmHead] = "lm_head.weight",
    };

    public static readonly IReadOnlyDictionary<WeightRole, string> QkvBiases = new Dictionary<WeightRole, string>
    {
        [WeightRole.QBias] = "model.layers.{0}.self_attn.q_proj.bias",
        [WeightRole.KBias] = "model.layers.{0}.self_attn.k_proj.bias",
        [WeightRole.VBias] = "model.layers.{0}.self_attn.v_proj.bias",
    };

    /// <summary>Buffers Hugging Face saves with some checkpoints; they hold nothing the config does not.</summary>
    public static readonly IReadOnlyList<string> InverseFrequencyBuffers = ["*.rotary_emb.inv_freq"];

    public static Dictionary<WeightRole, string> With(params IEnumerable<KeyValuePair<WeightRole, string>>[] parts) =>
        parts.SelectMany(p => p).ToDictionary(p => p.Key, p => p.Value);
}

/// <summary>Hugging Face's qwen2_moe / qwen3_moe names of a sparse layer's MLP (<c>{0}</c> = layer, <c>{1}</c> = expert).</summary>
public static class MoeLayout
{
    public static readonly IReadOnlyDictionary<WeightRole, string> RoutedExperts = new Dictionary<WeightRole, string>
    {
        [WeightRole.MoeRouter] = "model.layers.{0}.mlp.gate.weight",
        [WeightRole.ExpertGate] = "model.layers.{0}.mlp.experts.{1}.gate_proj.weight",
        [WeightRole.ExpertUp] = "model.layers.{0}.mlp.experts.{1}.up_proj.weight",
        [WeightRole.ExpertDown] = "model.layers.{0}.mlp.experts.{1}.down_proj.weight",
    };

    public static readonly IReadOnlyDictionary<WeightRole, string> SharedExpert = new Dictionary<WeightRole, string>
    {
        [WeightRole.SharedExpertGate] = "model.layers.{0}.mlp.shared_expert.gate_proj.weight",
        [WeightRole.SharedExpertUp] = "model.layers.{0}.mlp.shared_expert.up_proj.weight",
        [WeightRole.SharedExpertDown] = "model.layers.{0}.mlp.shared_expert.down_proj.weight",
        [WeightRole.SharedExpertSigmoidGate] = "model.layers.{0}.mlp.shared_expert_gate.weight",
    };
}

/// <summary>The family registry: model_type → family. One line per file of <c>Models/Families/</c>.</summary>
public static class ModelFamilies
{
    /// <summary>
    /// Every supported family: each static class in <c>Models/Families/</c> with a <c>Family</c> property, ordered by name,
    /// so adding a family is adding its file.
    /// </summary>
    public static IReadOnlyList<ModelFamily> All { get; } = typeof(ModelFamilies).Assembly.GetTypes()
        .Where(t => t.Namespace == typeof(Families.Llama).Namespace && t.IsClass && t.IsAbstract && t.IsSealed)
        .Select(t => t.GetProperty("Family", System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.Static)?.GetValue(null) as ModelFamily)
        .OfType<ModelFamily>()
        .OrderBy(f => f.Name, StringComparer.Ordinal)
        .ToArray();

    public static IEnumerable<string> SupportedModelTypes => All.SelectMany(f => f.ModelTypes).Order(StringComparer.Ordinal);

    public static ModelFamily Get(string modelType, string? source = null) =>
        All.FirstOrDefault(f => f.ModelTypes.Contains(modelType))
        ?? throw new LlmBuildException(ErrorCodes.UnsupportedModelType,
            $"{(source is null ? "" : source + ": ")}model_type '{modelType}' is not supported. Supported model types: {string.Join(", ", SupportedModelTypes)}.",
            source);
}
