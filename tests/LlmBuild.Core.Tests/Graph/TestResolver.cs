using System.Text.Json.Nodes;
using LlmBuild.Core.Models;
using LlmBuild.Core.Plan;

namespace LlmBuild.Core.Tests.Graph;

/// <summary>
/// Test-only stand-in for the resolve stage: builds a <see cref="ResolvedModel"/> (pieces, weight owners and their
/// entries, shapes from config.json) from a model directory and options, following the contract the real resolver
/// (Plan/Resolver.Resolve) implements. Replace its uses with the real resolver once it exists.
/// Piece list: embedding + embedding_cache (unless EmbeddingDisk); per layer block_i (block_prompt_i with SharePrompt),
/// block_kv_i (UseBlockWithKv or SharePrompt), block_cache_i; lm_head; greedy_head + sample_head (DoSample or LoRA);
/// embedding_lora, embedding_cache_lora, lm_head_lora (LoraMaxRank &gt; 0).
/// </summary>
internal static class TestResolver
{
    public static string RepoRoot { get; } = FindRoot();

    public static string Fixture(string relative) => Path.Combine(RepoRoot, "tests", "fixtures", relative);

    public static string TinyModelDir => Path.Combine(RepoRoot, "examples", "tiny-qwen2", "checkpoint");

    public static BuildOptions Options(string modelDir, int seqLength = 64) => new() { ModelPath = modelDir, SeqLength = seqLength };

    public static ResolvedModel Resolve(string modelDir, BuildOptions options, bool quantizeLmHead = false)
    {
        options.Validate();
        ModelConfig config = ModelConfig.Load(modelDir);
        ModelFamily family = ModelFamilies.Get(config.ModelType);
        var raw = (JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(modelDir, "config.json")))!;
        bool llamaBias = raw["attention_bias"] is JsonValue v && v.TryGetValue(out bool b) && b;
        bool mlpBias = raw["mlp_bias"] is JsonValue mv && mv.TryGetValue(out bool mb) && mb;

        string quantize = options.Quantize == "auto"
            ? (config.TorchDtype == "float16" ? "f16" : "bf16")
            : options.Quantize;
        int bits = quantize.StartsWith("w4", StringComparison.Ordinal) ? 4 : quantize.StartsWith("w8", StringComparison.Ordinal) ? 8 : 16;
        string activation = quantize.EndsWith("bf16", StringComparison.Ordinal) ? "bf16" : "f16";
        var scheme = new QuantScheme(bits, options.QGroupSize, options.Symmetric);
        bool fuseNorm = options.NumDevice == 1;

        int h = config.HiddenSize, qd = config.QDim, kvd = config.KvDim, inter = config.IntermediateSize, d = config.HeadDim;
        long[] ShapeOf(WeightRole role) => role switch
        {
            WeightRole.Embedding or WeightRole.LmHead => [config.VocabSize, h],
            WeightRole.InputNorm or WeightRole.PostAttentionNorm or WeightRole.FinalNorm or WeightRole.OBias => [h],
            WeightRole.QProj => [qd, h],
            WeightRole.KProj or WeightRole.VProj => [kvd, h],
            WeightRole.OProj => [h, qd],
            WeightRole.QBias => [qd],
            WeightRole.KBias or WeightRole.VBias => [kvd],
            WeightRole.QNorm or WeightRole.KNorm => [d],
            WeightRole.MlpGate or WeightRole.MlpUp => [inter, h],
            WeightRole.MlpDown => [h, inter],
            WeightRole.MlpGateBias or WeightRole.MlpUpBias => [inter],
            WeightRole.MlpDownBias => [h],
            _ => throw new ArgumentOutOfRangeException(nameof(role)),
        };
        WeightEntry Entry(WeightRole role, int layer, string? source = null, string? key = null)
        {
            string name = family.TensorName(role, layer);
            var storage = ModelFamily.IsBlockLinear(role) && scheme.IsQuantized || role == WeightRole.LmHead && quantizeLmHead && scheme.IsQuantized
                ? WeightStorage.Quantized : WeightStorage.Activation;
            return new WeightEntry(role, layer, source ?? name, key ?? name, storage, ShapeOf(role));
        }

        var owners = new List<WeightOwner>();
        if (!options.EmbeddingDisk) owners.Add(new WeightOwner("embedding", [Entry(WeightRole.Embedding, 0)]));
        for (int i = 0; i < config.NumLayers; i++)
        {
            var entries = new List<WeightEntry>();
            foreach (WeightRole role in Enum.GetValues<WeightRole>())
            {
                if (!ModelFamily.IsLayerRole(role) || !family.Has(role)) continue;
                bool isMlpBias = role is WeightRole.MlpGateBias or WeightRole.MlpUpBias or WeightRole.MlpDownBias;
                if (family.OptionalRoles.Contains(role) && !(isMlpBias ? mlpBias : llamaBias)) continue;
                entries.Add(Entry(role, i));
            }
            if (fuseNorm && i == config.NumLayers - 1) entries.Add(Entry(WeightRole.FinalNorm, 0));
            owners.Add(new WeightOwner(Piece.BlockName(i), entries));
        }
        var head = new List<WeightEntry>();
        if (!fuseNorm) head.Add(Entry(WeightRole.FinalNorm, 0));
        head.Add(config.TieWordEmbeddings
            ? Entry(WeightRole.LmHead, 0, source: family.TensorName(WeightRole.Embedding))
            : Entry(WeightRole.LmHead, 0));
        owners.Add(new WeightOwner("lm_head", head));

        var pieces = Resolver.BuildPieces(options, config);

        return new ResolvedModel
        {
            Name = Path.GetFileName(Path.TrimEndingDirectorySeparator(modelDir)).ToLowerInvariant(),
            Options = options,
            Config = config,
            Family = family.Name,
            ActivationDtype = activation,
            Quantize = quantize,
            Weights = scheme,
            QuantizeLmHead = quantizeLmHead,
            WeightFiles = [],
            Pieces = pieces,
            Owners = owners,
            FinalNormInLastBlock = fuseNorm,
        };
    }

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "LlmBuild.sln"))) return dir.FullName;
        throw new InvalidOperationException("Cannot find the repository root (LlmBuild.sln) above " + AppContext.BaseDirectory);
    }
}
