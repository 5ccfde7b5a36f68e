using System.Text.Json;
using System.Text.Json.Nodes;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.Models;

/// <summary>
/// RoPE frequency scaling from config.json's <c>rope_scaling</c>: linear, llama3, or longrope (Phi-3 "su"/"longrope",
/// MiniCPM): per-frequency divisors — <see cref="ShortFactor"/> for positions below
/// <see cref="OriginalMaxPositionEmbeddings"/>, <see cref="LongFactor"/> from there on — and cos/sin multiplied by
/// <see cref="AttentionFactor"/>.
/// </summary>
public sealed record RopeScaling(
    string Type,
    double Factor,
    double LowFreqFactor = 1.0,
    double HighFreqFactor = 4.0,
    int OriginalMaxPositionEmbeddings = 8192)
{
    public IReadOnlyList<double>? ShortFactor { get; init; }
    public IReadOnlyList<double>? LongFactor { get; init; }
    public double AttentionFactor { get; init; } = 1.0;
}

/// <summary>
/// A mixture-of-experts MLP as config.json sets it (see <see cref="MoeDeclaration"/>): each sparse layer routes every
/// token to its <see cref="ExpertsPerToken"/> most probable of <see cref="NumExperts"/> experts (SwiGLU of
/// <see cref="ExpertIntermediateSize"/>), weighted by the router's softmax probabilities — renormalised over the chosen
/// ones when <see cref="NormalizeTopK"/> — plus, when <see cref="SharedExpertIntermediateSize"/> &gt; 0, a shared expert
/// scaled by a sigmoid gate.
/// </summary>
public sealed record MoeConfig
{
    public required int NumExperts { get; init; }
    public required int ExpertsPerToken { get; init; }
    public required int ExpertIntermediateSize { get; init; }
    public required bool NormalizeTopK { get; init; }
    /// <summary>0 when the family has no shared expert.</summary>
    public int SharedExpertIntermediateSize { get; init; }
    /// <summary>Per layer: true for a sparse (mixture-of-experts) MLP, false for the dense MLP of intermediate_size.</summary>
    public required IReadOnlyList<bool> SparseLayers { get; init; }

    public bool IsSparse(int layer) => layer >= 0 && layer < SparseLayers.Count && SparseLayers[layer];
    public bool HasSharedExpert => SharedExpertIntermediateSize > 0;
}

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
    /// <summary>Per layer: the sliding-window length (key j visible at position p when p − j &lt; window), 0 = full attention.</summary>
    public IReadOnlyList<int> SlidingWindows { get; init; } = [];
    /// <summary>How many dimensions of each head RoPE rotates; 0 = all of head_dim (see <see cref="RotatedDims"/>).</summary>
    public int RotaryDim { get; init; }
    /// <summary>Multiplies the token embeddings (minicpm's scale_emb).</summary>
    public double EmbeddingMultiplier { get; init; } = 1.0;
    /// <summary>Multiplies each residual branch (attention and MLP output) before it is added (minicpm's scale_depth/√layers).</summary>
    public double ResidualMultiplier { get; init; } = 1.0;
    /// <summary>Multiplies the final hidden state after the final norm (minicpm's dim_model_base / hidden_size).</summary>
    public double FinalHiddenMultiplier { get; init; } = 1.0;
    /// <summary>Scales attention scores; 0 = head_dim^−½ (see <see cref="ScoreScale"/>).</summary>
    public double AttentionScale { get; init; }
    /// <summary>The RoPE base of sliding-window layers, which then use no rope_scaling (gemma3); null = rope_theta everywhere.</summary>
    public double? LocalRopeTheta { get; init; }
    /// <summary>tanh soft-capping: scores = cap · tanh(scores / cap); 0 = none.</summary>
    public double AttentionSoftcap { get; init; }
    public double FinalLogitSoftcap { get; init; }
    public required bool TieWordEmbeddings { get; init; }
    /// <summary>The checkpoint's torch_dtype: "bfloat16", "float16" or "float32".</summary>
    public required string TorchDtype { get; init; }
    public required string HiddenAct { get; init; }
    public int? BosTokenId { get; init; }
    public IReadOnlyList<int> EosTokenIds { get; init; } = [];
    /// <summary>The raw <c>quantization_config</c> object, when the checkpoint is pre-quantized.</summary>
    public JsonObject? QuantizationConfig { get; init; }
    /// <summary>The mixture-of-experts MLP of a family that declares one; null for dense models.</summary>
    public MoeConfig? Moe { get; init; }
    /// <summary>The vision tower of a vision-language family; null for text-only models.</summary>
    public VisionConfig? Vision { get; init; }
    /// <summary>M-RoPE (qwen2_vl): how many of the head_dim/2 frequencies take the temporal, height and width position
    /// (rope_scaling's mrope_section, summing to head_dim/2); null for plain 1-D RoPE.</summary>
    public IReadOnlyList<int>? MropeSection { get; init; }

    /// <summary>The M-RoPE position component (0 temporal, 1 height, 2 width) of frequency <paramref name="pair"/>.</summary>
    public int MropeComponent(int pair)
    {
        int start = 0;
        for (int s = 0; s < MropeSection!.Count; s++)
        {
            start += MropeSection[s];
            if (pair < start) return s;
        }
        return MropeSection.Count - 1;
    }

    /// <summary>True when layer <paramref name="layer"/>'s MLP is a mixture of experts.</summary>
    public bool IsSparseLayer(int layer) => Moe?.IsSparse(layer) == true;

    /// <summary>The most decoder layers a config may declare.</summary>
    public const int MaxLayers = 4096;

    public int KvDim => NumKvHeads * HeadDim;
    /// <summary>The dimensions of each head RoPE rotates: <see cref="RotaryDim"/>, or the whole head.</summary>
    public int RotatedDims => RotaryDim > 0 ? RotaryDim : HeadDim;
    /// <summary>The sliding window of a layer, 0 = full attention.</summary>
    public int WindowOf(int layer) => layer < SlidingWindows.Count ? SlidingWindows[layer] : 0;
    /// <summary>The factor applied to q·k.</summary>
    public double ScoreScale => AttentionScale > 0 ? AttentionScale : 1.0 / Math.Sqrt(HeadDim);
    /// <summary>True when a layer computes RoPE with <see cref="LocalRopeTheta"/> (its sliding-window layers).</summary>
    public bool UsesLocalRope(int layer) => LocalRopeTheta is not null && WindowOf(layer) > 0;
    public int QDim => NumHeads * HeadDim;

    /// <summary>
    /// Reads <c>config.json</c> (and, when present, <c>generation_config.json</c>) from a model directory, or the
    /// configuration a <c>.gguf</c> file's metadata stands for.
    /// </summary>
    public static ModelConfig Load(string modelDir)
    {
        if (Checkpoints.GgufCheckpoint.IsGgufPath(modelDir))
        {
            string gguf = Path.GetFullPath(modelDir);
            if (!File.Exists(gguf))
                throw new LlmBuildException(ErrorCodes.ModelNotFound, $"GGUF file '{gguf}' does not exist. Set ModelPath to a .gguf file or a Hugging Face checkpoint folder.", gguf);
            var (config, generationConfig) = Checkpoints.GgufModelConfig.Synthesize(Checkpoints.GgufFile.Read(gguf));
            return FromJson(config, generationConfig, gguf);
        }
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
        root = LanguageModelFields(root, family, source);
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

        int numLayers = reader.Int(f.NumLayers);
        // Per-layer facts are arrays: an absurd count is a damaged config, not a model (the largest have ~200 layers).
        if (numLayers > MaxLayers)
            throw new LlmBuildException(ErrorCodes.BadModelConfig,
                $"{source}: {f.NumLayers} is {numLayers}; LlmBuild accepts at most {MaxLayers} layers. Check config.json.", source);
        double rotaryFraction = reader.DoubleOr("partial_rotary_factor", family.DefaultRotaryFraction);
        int rotaryDim = (int)Math.Round(headDim * rotaryFraction);
        if (rotaryFraction is <= 0 or > 1 || rotaryDim % 2 != 0)
            throw new LlmBuildException(ErrorCodes.BadModelConfig,
                $"{source}: partial_rotary_factor {rotaryFraction} of head_dim {headDim} does not give an even number of rotated dimensions.", source);

        var eos = new SortedSet<int>();
        AddIds(eos, root["eos_token_id"]);
        if (generation is not null) AddIds(eos, generation["eos_token_id"]);

        return new ModelConfig
        {
            ModelType = modelType,
            HiddenSize = hidden,
            NumLayers = numLayers,
            NumHeads = heads,
            NumKvHeads = kvHeads,
            HeadDim = headDim,
            IntermediateSize = reader.Int(f.IntermediateSize),
            VocabSize = reader.Int(f.VocabSize),
            // Both divide or take powers: zero or a negative value would fill the model with NaN.
            RmsNormEps = reader.PositiveDoubleOr(f.RmsNormEps, 1e-6),
            RopeTheta = reader.PositiveDoubleOr(f.RopeTheta, 10000.0),
            RopeScaling = ReadRopeScaling(root, rotaryDim, reader.IntOr(f.MaxPositionEmbeddings, 2048), source),
            MaxPositionEmbeddings = reader.IntOr(f.MaxPositionEmbeddings, 2048),
            SlidingWindows = LayerWindows(family, root, reader, numLayers),
            RotaryDim = rotaryDim,
            EmbeddingMultiplier = family.EmbeddingScaleField is { } emb ? reader.Double(emb) : family.EmbeddingTimesSqrtHidden ? Math.Sqrt(hidden) : 1.0,
            AttentionScale = family.QueryScaleField is { } qs ? 1.0 / Math.Sqrt(reader.Double(qs)) : 0,
            LocalRopeTheta = family.LocalRopeThetaField is { } local ? reader.Double(local) : null,
            AttentionSoftcap = family.AttentionSoftcapField is { } ac ? reader.DoubleOr(ac, 0) : 0,
            FinalLogitSoftcap = family.FinalSoftcapField is { } fc ? reader.DoubleOr(fc, 0) : 0,
            ResidualMultiplier = family.ResidualDepthScaleField is { } depth ? reader.Double(depth) / Math.Sqrt(numLayers) : 1.0,
            FinalHiddenMultiplier = family.LogitWidthBaseField is { } width ? reader.Double(width) / hidden : 1.0,
            TieWordEmbeddings = reader.BoolOr("tie_word_embeddings", family.TieWordEmbeddingsDefault),
            TorchDtype = StringOr(root, "torch_dtype", source) ?? StringOr(root, "dtype", source) ?? "float32",
            HiddenAct = StringOr(root, f.HiddenAct, source) ?? "silu",
            BosTokenId = root["bos_token_id"] is JsonValue b && b.TryGetValue(out int bos) ? bos : null,
            EosTokenIds = eos.ToArray(),
            QuantizationConfig = root["quantization_config"] as JsonObject,
            Moe = family.Moe is { } moe ? ReadMoe(moe, root, reader, numLayers) : null,
            Vision = family.Vision is { } tower ? VisionConfig.Read(root, tower, source) : null,
            MropeSection = family.MultimodalRope ? ReadMropeSection(root, rotaryDim, source) : null,
        };
    }

    /// <summary>
    /// The config fields of the language model: <paramref name="root"/> itself, or for a family whose config nests them
    /// (<see cref="ModelFamily.TextConfigField"/>) that object's fields over the top-level ones (dtype, end-of-sequence
    /// ids; model_type stays the top level's) over the family's defaults. The nested object itself is not repeated.
    /// </summary>
    public static JsonObject LanguageModelFields(JsonObject root, ModelFamily family, string source)
    {
        if (family.TextConfigField is not { } field) return root;
        if (root[field] is not JsonObject text)
            throw new LlmBuildException(ErrorCodes.BadModelConfig,
                $"{source}: family {family.Name} keeps the language model's fields in \"{field}\", which is {(root[field] is null ? "missing" : "not an object")}. " +
                "Use the checkpoint's own config.json.", source);
        var merged = (JsonObject?)family.TextConfigDefaults?.DeepClone() ?? new JsonObject();
        foreach (var (key, value) in root)
            if (key != field) merged[key] = value?.DeepClone();
        foreach (var (key, value) in text)
            if (key != "model_type") merged[key] = value?.DeepClone();
        return merged;
    }

    /// <summary>
    /// The mixture-of-experts fields: a layer is sparse when it is not in the dense-layer list and (layer + 1) is a
    /// multiple of the sparse step (Hugging Face's rule for qwen2_moe / qwen3_moe).
    /// </summary>
    private static MoeConfig ReadMoe(MoeDeclaration moe, JsonObject root, ConfigReader reader, int layers)
    {
        int experts = reader.Int(moe.NumExperts), perToken = reader.Int(moe.ExpertsPerToken);
        if (perToken > experts)
            throw new LlmBuildException(ErrorCodes.BadModelConfig,
                $"{reader.Source}: {moe.ExpertsPerToken} ({perToken}) is larger than {moe.NumExperts} ({experts}); each token picks that many distinct experts.", reader.Source);
        int step = reader.IntOr(moe.SparseStep, 1);
        var dense = new HashSet<int>();
        switch (root[moe.DenseLayers])
        {
            case null: break;
            case JsonArray list:
                foreach (JsonNode? n in list)
                    dense.Add(n is JsonValue v && v.TryGetValue(out int l) && l >= 0 ? l
                        : throw new LlmBuildException(ErrorCodes.BadModelConfig,
                            $"{reader.Source}: field \"{moe.DenseLayers}\" is {list.ToJsonString()}, expected a list of layer indices.", reader.Source));
                break;
            default:
                throw new LlmBuildException(ErrorCodes.BadModelConfig,
                    $"{reader.Source}: field \"{moe.DenseLayers}\" is {root[moe.DenseLayers]!.ToJsonString()}, expected a list of layer indices.", reader.Source);
        }
        return new MoeConfig
        {
            NumExperts = experts,
            ExpertsPerToken = perToken,
            ExpertIntermediateSize = reader.Int(moe.ExpertIntermediateSize),
            NormalizeTopK = reader.BoolOr(moe.NormalizeTopK, moe.NormalizeTopKDefault),
            SharedExpertIntermediateSize = moe.SharedExpertIntermediateSize is { } shared ? reader.Int(shared) : 0,
            SparseLayers = Enumerable.Range(0, layers).Select(l => !dense.Contains(l) && (l + 1) % step == 0).ToArray(),
        };
    }

    /// <summary>rope_scaling's mrope_section: three positive counts summing to the rotated dimensions / 2.</summary>
    private static int[] ReadMropeSection(JsonObject root, int rotaryDim, string source)
    {
        int[]? section = (root["rope_scaling"] as JsonObject)?["mrope_section"] is JsonArray a
            && a.All(n => n is JsonValue v && v.TryGetValue(out int i) && i > 0) ? a.Select(n => (int)n!).ToArray() : null;
        if (section is null || section.Length != 3 || section.Sum() != rotaryDim / 2)
            throw new LlmBuildException(ErrorCodes.BadModelConfig,
                $"{source}: rope_scaling must hold \"mrope_section\": three positive counts (temporal, height, width) summing to head_dim/2 = {rotaryDim / 2}; " +
                $"found {(root["rope_scaling"] as JsonObject)?["mrope_section"]?.ToJsonString() ?? "none"}.", source);
        return section;
    }

    private static RopeScaling? ReadRopeScaling(JsonObject root, int rotaryDim, int maxPositions, string source)
    {
        if (root["rope_scaling"] is not JsonObject o) return null;
        string type = StringOr(o, "rope_type", source) ?? StringOr(o, "type", source) ?? "default";
        // M-RoPE ("mrope", saved as "default" by newer Transformers) splits the default frequencies by mrope_section
        // (ReadMropeSection); the frequencies themselves are unscaled.
        if (type == "default" || type == "mrope" && o["mrope_section"] is not null) return null;
        var r = new ConfigReader(o, source + " rope_scaling");
        switch (type)
        {
            case "linear":
            case "llama3":
            {
                var scaling = new RopeScaling(type, r.PositiveDouble("factor"), r.PositiveDoubleOr("low_freq_factor", 1.0), r.PositiveDoubleOr("high_freq_factor", 4.0),
                    r.IntOr("original_max_position_embeddings", 8192));
                if (type == "llama3" && scaling.HighFreqFactor == scaling.LowFreqFactor)
                    throw new LlmBuildException(ErrorCodes.BadModelConfig,
                        $"{source}: rope_scaling high_freq_factor equals low_freq_factor ({scaling.LowFreqFactor}); llama3 scaling divides by their difference.", source);
                return scaling;
            }
            case "longrope":
            case "su":
            {
                // Phi-3 keeps original_max_position_embeddings at the top level; MiniCPM inside rope_scaling.
                int original = r.IntOr("original_max_position_embeddings", new ConfigReader(root, source).IntOr("original_max_position_embeddings", maxPositions));
                double[] shortFactor = r.Doubles("short_factor"), longFactor = r.Doubles("long_factor");
                if (shortFactor.Length != rotaryDim / 2 || longFactor.Length != rotaryDim / 2)
                    throw new LlmBuildException(ErrorCodes.BadModelConfig,
                        $"{source}: rope_scaling short_factor/long_factor have {shortFactor.Length}/{longFactor.Length} entries; the rotary dimension {rotaryDim} needs {rotaryDim / 2}.", source);
                double scale = (double)maxPositions / original;
                double attention = r.DoubleOr("attention_factor", scale <= 1 ? 1.0 : Math.Sqrt(1 + Math.Log(scale) / Math.Log(original)));
                return new RopeScaling("longrope", 1.0, OriginalMaxPositionEmbeddings: original)
                {
                    ShortFactor = shortFactor, LongFactor = longFactor, AttentionFactor = attention,
                };
            }
            default:
                throw new LlmBuildException(ErrorCodes.BadModelConfig,
                    $"{source}: rope_scaling type '{type}' is not supported (supported: linear, llama3, longrope).", source);
        }
    }

    /// <summary>Each layer's sliding window from the family's rule and config.json (0 = full attention).</summary>
    private static int[] LayerWindows(ModelFamily family, JsonObject root, ConfigReader reader, int layers)
    {
        var windows = new int[layers];
        int window = reader.IntOr("sliding_window", 0);
        if (window == 0) return windows;
        switch (family.SlidingWindow)
        {
            case SlidingWindowLayers.All:
                Array.Fill(windows, window);
                break;
            case SlidingWindowLayers.FromMaxWindowLayers:
                if (!reader.BoolOr("use_sliding_window", false)) break;
                for (int i = reader.IntOr("max_window_layers", layers); i < layers; i++) windows[i] = window;
                break;
            case SlidingWindowLayers.EvenLayers:
                for (int i = 0; i < layers; i += 2) windows[i] = window;
                break;
            case SlidingWindowLayers.AllButEveryPatternth:
                int pattern = reader.IntOr("sliding_window_pattern", 6);
                for (int i = 0; i < layers; i++) if ((i + 1) % pattern != 0) windows[i] = window;
                break;
            default:
                throw new LlmBuildException(ErrorCodes.BadModelConfig,
                    $"{reader.Source}: sliding_window {window} is set, but family {family.Name} has no sliding-window attention. Remove the field if the model does not use it.", reader.Source);
        }
        return windows;
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

    public static JsonObject ParseObject(string path)
    {
        JsonObject root;
        try
        {
            root = JsonNode.Parse(File.ReadAllText(path), documentOptions: new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip }) as JsonObject
                ?? throw new LlmBuildException(ErrorCodes.BadModelConfig, $"{path}: the top level is not a JSON object.", path);
        }
        catch (JsonException e)
        {
            throw new LlmBuildException(ErrorCodes.BadModelConfig, $"{path}: invalid JSON at line {e.LineNumber + 1}: {e.Message}", path, e);
        }
        RefuseDuplicateKeys(root, path, "");
        return root;
    }

    /// <summary>
    /// A key given twice is refused rather than resolved: Python's json keeps the last value, so Hugging Face would use a
    /// value a reader of the file may not expect, and System.Text.Json would fail later with a raw exception.
    /// </summary>
    private static void RefuseDuplicateKeys(JsonNode? node, string path, string where)
    {
        try
        {
            switch (node)
            {
                case JsonObject o:
                    foreach (var (key, value) in o) RefuseDuplicateKeys(value, path, where.Length == 0 ? key : $"{where}.{key}");
                    break;
                case JsonArray a:
                    for (int i = 0; i < a.Count; i++) RefuseDuplicateKeys(a[i], path, $"{where}[{i}]");
                    break;
            }
        }
        catch (ArgumentException e)
        {
            throw new LlmBuildException(ErrorCodes.BadModelConfig,
                $"{path}: {(where.Length == 0 ? "the top-level object" : $"\"{where}\"")} names a key twice ({e.Message}). Keep one value per key.", path, e);
        }
    }

    /// <summary>Typed field access with coded errors naming the file and field.</summary>
    private readonly struct ConfigReader(JsonObject o, string source)
    {
        public string Source => source;

        public double[] Doubles(string name)
        {
            if (o[name] is not JsonArray a) throw o[name] is null ? Missing(name) : Wrong(name, "a list of numbers");
            var values = new double[a.Count];
            for (int i = 0; i < a.Count; i++)
                values[i] = a[i] is JsonValue v && v.TryGetValue(out double d) && double.IsFinite(d) ? d : throw Wrong(name, "a list of numbers");
            return values;
        }

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
