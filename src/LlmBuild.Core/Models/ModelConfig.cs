using System.Text.Json;
using System.Text.Json.Nodes;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.Models;

/// <summary>RoPE frequency scaling from config.json's <c>rope_scaling</c> (types: none, linear, llama3).</summary>
public sealed record RopeScaling(
    string Type,
    double Factor,
    double LowFreqFactor = 1.0,
    double HighFreqFactor = 4.0,
    int OriginalMaxPositionEmbeddings = 8192);

/// <summary>
/// The architecture facts of a Hugging Face causal LM, read from config.json (and generation_config.json for the
/// end-of-sequence ids). Field names differ per family; <see cref="ModelFamily"/> says where each one lives.
/// </summary>
public sealed record ModelConfig
{
    public required string ModelType { get; init; }
    public required int HiddenSize { get; init; }
    public required int NumLayers { get; init; }
    public required int NumHeads { get; init; }
    public required int NumKvHeads { get; init; }
    public required int HeadDim { get; init; }
    public required int IntermediateSize { get; init; }
    public required int VocabSize { get; init; }
    public required double RmsNormEps { get; init; }
    public required double RopeTheta { get; init; }
    public RopeScaling? RopeScaling { get; init; }
    public required int MaxPositionEmbeddings { get; init; }
    public required bool TieWordEmbeddings { get; init; }
    /// <summary>The checkpoint's torch_dtype: "bfloat16", "float16" or "float32".</summary>
    public required string TorchDtype { get; init; }
    public required string HiddenAct { get; init; }
    public int? BosTokenId { get; init; }
    public IReadOnlyList<int> EosTokenIds { get; init; } = [];
    /// <summary>The raw <c>quantization_config</c> object, when the checkpoint is pre-quantized.</summary>
    public JsonObject? QuantizationConfig { get; init; }

    public int KvDim => NumKvHeads * HeadDim;
    public int QDim => NumHeads * HeadDim;

    /// <summary>Reads <c>config.json</c> (and, when present, <c>generation_config.json</c>) from a model directory.</summary>
    public static ModelConfig Load(string modelDir)
    {
        string path = Path.Combine(modelDir, "config.json");
        if (!Directory.Exists(modelDir))
            throw new LlmBuildException(ErrorCodes.ModelNotFound,
                $"Model directory '{Path.GetFullPath(modelDir)}' does not exist. Set ModelPath to a Hugging Face checkpoint folder.", modelDir);
        if (!File.Exists(path))
            throw new LlmBuildException(ErrorCodes.ModelNotFound,
                $"'{Path.GetFullPath(path)}' does not exist. ModelPath must be a Hugging Face checkpoint folder containing config.json.", path);
        JsonObject root = ParseObject(path);
        JsonObject? generation = null;
        string genPath = Path.Combine(modelDir, "generation_config.json");
        if (File.Exists(genPath)) generation = ParseObject(genPath);
        return FromJson(root, generation, path);
    }

    /// <summary>Builds the config from parsed JSON; <paramref name="source"/> names the file in errors.</summary>
    public static ModelConfig FromJson(JsonObject root, JsonObject? generation, string source)
    {
        string modelType = StringOr(root, "model_type", source)
            ?? throw new LlmBuildException(ErrorCodes.BadModelConfig, $"{source}: no \"model_type\" field. Is this a Hugging Face config.json?", source);
        ModelFamily family = ModelFamilies.Get(modelType, source);
        var f = family.ConfigFields;
        var reader = new ConfigReader(root, source);

        int hidden = reader.Int(f.HiddenSize);
        int heads = reader.Int(f.NumHeads);
        int kvHeads = reader.IntOr(f.NumKvHeads, heads);
        int headDim = reader.IntOr(f.HeadDim, 0);
        if (headDim == 0)
        {
            if (hidden % heads != 0)
                throw new LlmBuildException(ErrorCodes.BadModelConfig,
                    $"{source}: {f.HiddenSize} ({hidden}) is not divisible by {f.NumHeads} ({heads}) and no {f.HeadDim} is given.", source);
            headDim = hidden / heads;
        }
        if (heads % kvHeads != 0)
            throw new LlmBuildException(ErrorCodes.BadModelConfig,
                $"{source}: {f.NumHeads} ({heads}) is not a multiple of {f.NumKvHeads} ({kvHeads}).", source);

        var eos = new SortedSet<int>();
        AddIds(eos, root["eos_token_id"]);
        if (generation is not null) AddIds(eos, generation["eos_token_id"]);

        return new ModelConfig
        {
            ModelType = modelType,
            HiddenSize = hidden,
            NumLayers = reader.Int(f.NumLayers),
            NumHeads = heads,
            NumKvHeads = kvHeads,
            HeadDim = headDim,
            IntermediateSize = reader.Int(f.IntermediateSize),
            VocabSize = reader.Int(f.VocabSize),
            // Both divide or take powers: zero or a negative value would fill the model with NaN.
            RmsNormEps = reader.PositiveDoubleOr(f.RmsNormEps, 1e-6),
            RopeTheta = reader.PositiveDoubleOr(f.RopeTheta, 10000.0),
            RopeScaling = ReadRopeScaling(root["rope_scaling"], source),
            MaxPositionEmbeddings = reader.IntOr("max_position_embeddings", 2048),
            TieWordEmbeddings = reader.BoolOr("tie_word_embeddings", family.TieWordEmbeddingsDefault),
            TorchDtype = StringOr(root, "torch_dtype", source) ?? StringOr(root, "dtype", source) ?? "float32",
            HiddenAct = StringOr(root, "hidden_act", source) ?? "silu",
            BosTokenId = root["bos_token_id"] is JsonValue b && b.TryGetValue(out int bos) ? bos : null,
            EosTokenIds = eos.ToArray(),
            QuantizationConfig = root["quantization_config"] as JsonObject,
        };
    }

    private static RopeScaling? ReadRopeScaling(JsonNode? node, string source)
    {
        if (node is not JsonObject o) return null;
        string type = StringOr(o, "rope_type", source) ?? StringOr(o, "type", source) ?? "default";
        if (type == "default") return null;
        if (type is not ("linear" or "llama3"))
            throw new LlmBuildException(ErrorCodes.BadModelConfig,
                $"{source}: rope_scaling type '{type}' is not supported (supported: linear, llama3).", source);
        var r = new ConfigReader(o, source + " rope_scaling");
        var scaling = new RopeScaling(type, r.PositiveDouble("factor"), r.PositiveDoubleOr("low_freq_factor", 1.0), r.PositiveDoubleOr("high_freq_factor", 4.0),
            r.IntOr("original_max_position_embeddings", 8192));
        if (type == "llama3" && scaling.HighFreqFactor == scaling.LowFreqFactor)
            throw new LlmBuildException(ErrorCodes.BadModelConfig,
                $"{source}: rope_scaling high_freq_factor equals low_freq_factor ({scaling.LowFreqFactor}); llama3 scaling divides by their difference.", source);
        return scaling;
    }

    /// <summary>A string field, null when absent; a coded error when it holds another JSON type.</summary>
    private static string? StringOr(JsonObject o, string name, string source)
    {
        if (o[name] is null) return null;
        if (o[name] is JsonValue v && v.TryGetValue(out string? text)) return text;
        throw new LlmBuildException(ErrorCodes.BadModelConfig, $"{source}: field \"{name}\" is {o[name]!.ToJsonString()}, expected a string.", source);
    }

    private static void AddIds(SortedSet<int> ids, JsonNode? node)
    {
        switch (node)
        {
            case JsonArray a: foreach (var n in a) if (n is JsonValue v && v.TryGetValue(out int id)) ids.Add(id); break;
            case JsonValue v when v.TryGetValue(out int id): ids.Add(id); break;
        }
    }

    internal static JsonObject ParseObject(string path)
    {
        try
        {
            return JsonNode.Parse(File.ReadAllText(path), documentOptions: new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip }) as JsonObject
                ?? throw new LlmBuildException(ErrorCodes.BadModelConfig, $"{path}: the top level is not a JSON object.", path);
        }
        catch (JsonException e)
        {
            throw new LlmBuildException(ErrorCodes.BadModelConfig, $"{path}: invalid JSON at line {e.LineNumber + 1}: {e.Message}", path, e);
        }
    }

    /// <summary>Typed field access with coded errors naming the file and field.</summary>
    private readonly struct ConfigReader(JsonObject o, string source)
    {
        public int Int(string name) => IntOr(name, null) ?? throw Missing(name);
        public int IntOr(string name, int fallback) => IntOr(name, (int?)fallback)!.Value;
        public double Double(string name) => DoubleOr(name, null) ?? throw Missing(name);
        public double DoubleOr(string name, double fallback) => DoubleOr(name, (double?)fallback)!.Value;
        public double PositiveDouble(string name) => PositiveDoubleOr(name, null) ?? throw Missing(name);
        public double PositiveDoubleOr(string name, double fallback) => PositiveDoubleOr(name, (double?)fallback)!.Value;

        private double? PositiveDoubleOr(string name, double? fallback)
        {
            double? d = DoubleOr(name, fallback);
            return d is null or > 0 ? d : throw Wrong(name, "a positive number");
        }

        public bool BoolOr(string name, bool fallback)
        {
            if (o[name] is not JsonValue v) return fallback;
            return v.TryGetValue(out bool b) ? b : throw Wrong(name, "true or false");
        }

        private int? IntOr(string name, int? fallback)
        {
            if (o[name] is null) return fallback;
            if (o[name] is JsonValue v && v.TryGetValue(out double d) && d == Math.Floor(d) && d is > 0 and <= int.MaxValue) return (int)d;
            throw Wrong(name, "a positive integer");
        }

        private double? DoubleOr(string name, double? fallback)
        {
            if (o[name] is null) return fallback;
            if (o[name] is JsonValue v && v.TryGetValue(out double d) && double.IsFinite(d)) return d;
            throw Wrong(name, "a number");
        }

        private LlmBuildException Missing(string name) =>
            new(ErrorCodes.BadModelConfig, $"{source}: required field \"{name}\" is missing.", source);

        private LlmBuildException Wrong(string name, string expected) =>
            new(ErrorCodes.BadModelConfig, $"{source}: field \"{name}\" is {o[name]!.ToJsonString()}, expected {expected}.", source);
    }
}
