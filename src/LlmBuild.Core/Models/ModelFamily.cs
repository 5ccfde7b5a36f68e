using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.Models;

/// <summary>What a checkpoint tensor is for, independent of how a family names it.</summary>
public enum WeightRole
{
    Embedding,
    InputNorm,
    QProj, QBias, KProj, KBias, VProj, VBias, OProj, OBias,
    /// <summary>Per-head RMSNorm on queries/keys before RoPE (qwen3).</summary>
    QNorm, KNorm,
    PostAttentionNorm,
    MlpGate, MlpUp, MlpDown,
    FinalNorm,
    LmHead,
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
    string RopeTheta = "rope_theta");

/// <summary>How RoPE pairs the dimensions of a head: rotate_half (first/second half) or interleaved (even/odd).</summary>
public enum RopeMode { RotateHalf, Interleaved }

/// <summary>
/// One row of the family registry: the model_types it covers, its config field names, its weight-role map
/// (role → checkpoint tensor name, <c>{0}</c> = layer index) and the block's structural switches.
/// Adding a family is one row in <see cref="ModelFamilies"/>; a block that differs also needs a graph builder.
/// </summary>
public sealed record ModelFamily
{
    public required string Name { get; init; }
    public required IReadOnlyList<string> ModelTypes { get; init; }
    public ConfigFieldNames ConfigFields { get; init; } = new();
    public required IReadOnlyDictionary<WeightRole, string> WeightNames { get; init; }
    /// <summary>Roles the family may omit (e.g. biases in a llama config with attention_bias=false).</summary>
    public IReadOnlySet<WeightRole> OptionalRoles { get; init; } = new HashSet<WeightRole>();
    public RopeMode RopeMode { get; init; } = RopeMode.RotateHalf;
    public bool TieWordEmbeddingsDefault { get; init; }

    public bool Has(WeightRole role) => WeightNames.ContainsKey(role);

    /// <summary>The checkpoint tensor name of a role (layer is ignored for model-level roles).</summary>
    public string TensorName(WeightRole role, int layer = 0) =>
        WeightNames.TryGetValue(role, out string? pattern)
            ? string.Format(System.Globalization.CultureInfo.InvariantCulture, pattern, layer)
            : throw new InvalidOperationException($"Family {Name} has no weight role {role}.");

    /// <summary>True for roles that exist once per decoder layer.</summary>
    public static bool IsLayerRole(WeightRole role) => role is not (WeightRole.Embedding or WeightRole.FinalNorm or WeightRole.LmHead);

    /// <summary>True for the linear layers of a block (the tensors weight-only quantization applies to).</summary>
    public static bool IsBlockLinear(WeightRole role) =>
        role is WeightRole.QProj or WeightRole.KProj or WeightRole.VProj or WeightRole.OProj
            or WeightRole.MlpGate or WeightRole.MlpUp or WeightRole.MlpDown;
}

/// <summary>The family registry: model_type → family.</summary>
public static class ModelFamilies
{
    private static readonly Dictionary<WeightRole, string> LlamaNames = new()
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

    private static readonly Dictionary<WeightRole, string> Biases = new()
    {
        [WeightRole.QBias] = "model.layers.{0}.self_attn.q_proj.bias",
        [WeightRole.KBias] = "model.layers.{0}.self_attn.k_proj.bias",
        [WeightRole.VBias] = "model.layers.{0}.self_attn.v_proj.bias",
    };

    private static Dictionary<WeightRole, string> With(params IEnumerable<KeyValuePair<WeightRole, string>>[] parts) =>
        parts.SelectMany(p => p).ToDictionary(p => p.Key, p => p.Value);

    /// <summary>Every supported family, in registry order.</summary>
    public static IReadOnlyList<ModelFamily> All { get; } =
    [
        new ModelFamily
        {
            Name = "llama",
            ModelTypes = ["llama", "mistral"],
            WeightNames = With(LlamaNames, Biases,
                [new(WeightRole.OBias, "model.layers.{0}.self_attn.o_proj.bias")]),
            // attention_bias=true llamas carry q/k/v/o biases; the usual ones carry none.
            OptionalRoles = new HashSet<WeightRole> { WeightRole.QBias, WeightRole.KBias, WeightRole.VBias, WeightRole.OBias },
        },
        new ModelFamily
        {
            Name = "qwen2",
            ModelTypes = ["qwen2"],
            WeightNames = With(LlamaNames, Biases),
        },
        new ModelFamily
        {
            Name = "qwen3",
            ModelTypes = ["qwen3"],
            WeightNames = With(LlamaNames,
                [new(WeightRole.QNorm, "model.layers.{0}.self_attn.q_norm.weight"),
                 new(WeightRole.KNorm, "model.layers.{0}.self_attn.k_norm.weight")]),
        },
    ];

    public static IEnumerable<string> SupportedModelTypes => All.SelectMany(f => f.ModelTypes).Order(StringComparer.Ordinal);

    public static ModelFamily Get(string modelType, string? source = null) =>
        All.FirstOrDefault(f => f.ModelTypes.Contains(modelType))
        ?? throw new LlmBuildException(ErrorCodes.UnsupportedModelType,
            $"{(source is null ? "" : source + ": ")}model_type '{modelType}' is not supported. Supported model types: {string.Join(", ", SupportedModelTypes)}.",
            source);
}
