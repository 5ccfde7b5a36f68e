using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Models;
using LlmBuild.Core.Quantization;

namespace LlmBuild.Core.Pipeline;

/// <summary>
/// The resolve stage's decisions: reads config.json, picks the family, resolves Quantize=auto, checks every
/// option against the model, checks the checkpoint has every tensor the family needs with the right shape,
/// and lists the pieces and weight owners.
/// </summary>
public static class Resolver
{
    /// <param name="name">The output model's name (bin/&lt;name&gt;.bmodel).</param>
    /// <param name="quantizeLmHead">Quantize lm_head like the block linears (off by default).</param>
    public static ResolvedModel Resolve(BuildOptions options, string name, bool quantizeLmHead, ICollection<LlmBuildWarning> warnings)
    {
        string modelDir = Path.GetFullPath(options.ModelPath);
        ModelConfig config = ModelConfig.Load(modelDir);
        ModelFamily family = ModelFamilies.Get(config.ModelType, Path.Combine(modelDir, "config.json"));
        var (quantize, activation, scheme) = QuantizationResolver.Resolve(config, options.Quantize, options.QGroupSize, options.Symmetric, warnings);
        CheckGroupSize(config, scheme);
        CheckLengths(options, config, warnings);

        using ICheckpoint checkpoint = CheckpointLoader.Open(modelDir);
        QuantizationResolver.NoteGgufRequantization(checkpoint, quantize, scheme, warnings);
        bool fuseFinalNorm = options.NumDevice == 1;
        var owners = MarkPermutedInputs(BuildOwners(config, family, checkpoint, scheme, quantizeLmHead, fuseFinalNorm, modelDir), config, checkpoint, modelDir);
        var pieces = BuildPieces(options, config);

        return new ResolvedModel
        {
            Name = name,
            Options = options with { ModelPath = modelDir },
            Config = config,
            Family = family.Name,
            ActivationDtype = activation,
            Quantize = quantize,
            Weights = scheme,
            QuantizeLmHead = quantizeLmHead && scheme.IsQuantized,
            WeightFiles = checkpoint.Files,
            Pieces = pieces,
            Owners = owners,
            FinalNormInLastBlock = fuseFinalNorm,
        };
    }

    private static void CheckGroupSize(ModelConfig c, QuantScheme scheme)
    {
        if (!scheme.IsQuantized || scheme.GroupSize == 0) return;
        var ks = new List<(string What, int K)> { ("hidden_size", c.HiddenSize), ("intermediate_size", c.IntermediateSize), ("num_attention_heads × head_dim", c.QDim) };
        foreach (var (what, k) in ks)
        {
            if (k % scheme.GroupSize != 0)
                throw new LlmBuildException(ErrorCodes.ConflictingProperties,
                    $"QGroupSize={scheme.GroupSize} does not divide {what} ({k}) of this model, so the linear layers cannot be split into groups. " +
                    $"Use a group size that divides {k} (e.g. {LargestDividingGroup(k)}) or 0 for per-channel quantization.");
        }
        if (scheme.Bits == 4 && scheme.GroupSize % 2 != 0)
            throw new LlmBuildException(ErrorCodes.InvalidProperty, $"QGroupSize={scheme.GroupSize} must be even for 4-bit quantization (two weights per byte).");
    }

    /// <summary>The largest usual group size (128 … 8) that divides <paramref name="k"/>, or 0.</summary>
    internal static int LargestDividingGroup(int k)
    {
        foreach (int g in new[] { 128, 64, 32, 16, 8 }) if (k % g == 0) return g;
        return 0;
    }

    private static void CheckLengths(BuildOptions o, ModelConfig c, ICollection<LlmBuildWarning> warnings)
    {
        if (o.SeqLength > c.MaxPositionEmbeddings)
            warnings.Add(new LlmBuildWarning(ErrorCodes.ConflictingProperties,
                $"SeqLength={o.SeqLength} exceeds the model's max_position_embeddings ({c.MaxPositionEmbeddings}); positions past it were never trained."));
    }

    private static List<WeightOwner> BuildOwners(ModelConfig c, ModelFamily family, ICheckpoint checkpoint, QuantScheme scheme,
        bool quantizeLmHead, bool fuseFinalNorm, string modelDir)
    {
        long h = c.HiddenSize, q = c.QDim, kv = c.KvDim, inter = c.IntermediateSize, d = c.HeadDim, vocab = c.VocabSize;
        long[] Shape(WeightRole role) => role switch
        {
            WeightRole.Embedding or WeightRole.LmHead => [vocab, h],
            WeightRole.InputNorm or WeightRole.PostAttentionNorm or WeightRole.FinalNorm or WeightRole.OBias => [h],
            WeightRole.QProj => [q, h],
            WeightRole.QBias => [q],
            WeightRole.KProj or WeightRole.VProj => [kv, h],
            WeightRole.KBias or WeightRole.VBias => [kv],
            WeightRole.OProj => [h, q],
            WeightRole.QNorm or WeightRole.KNorm => [d],
            WeightRole.MlpGate or WeightRole.MlpUp => [inter, h],
            WeightRole.MlpDown => [h, inter],
            _ => throw new InvalidOperationException(role.ToString()),
        };

        WeightEntry? Entry(WeightRole role, int layer, WeightStorage storage, string? sourceOverride = null, string? keyOverride = null)
        {
            string source = sourceOverride ?? family.TensorName(role, layer);
            bool present = checkpoint.Contains(source) || IsPrequantized(checkpoint, source);
            if (!present)
            {
                if (family.OptionalRoles.Contains(role)) return null;
                throw new LlmBuildException(ErrorCodes.MissingWeight,
                    $"Tensor '{source}' ({role}{(FamilyLayer(role) ? $" of layer {layer}" : "")}) is missing from the checkpoint in '{modelDir}'. " +
                    "Check that the weights belong to this config.json and that every shard is present.", modelDir);
            }
            long[] shape = Shape(role);
            if (checkpoint.Contains(source))
            {
                TensorInfo info = checkpoint.GetInfo(source);
                if (!info.Shape.SequenceEqual(shape))
                    throw new LlmBuildException(ErrorCodes.MissingWeight,
                        $"Tensor '{source}' in '{info.File}' has shape [{string.Join(",", info.Shape)}] but config.json implies [{string.Join(",", shape)}]. " +
                        "Check that the weights belong to this config.json.", info.File);
            }
            return new WeightEntry(role, FamilyLayer(role) ? layer : -1, source, keyOverride ?? source, storage, shape);
        }

        var owners = new List<WeightOwner>
        {
            new("embedding", [Entry(WeightRole.Embedding, 0, WeightStorage.Activation)!]),
        };
        WeightStorage linear = scheme.IsQuantized ? WeightStorage.Quantized : WeightStorage.Activation;
        for (int layer = 0; layer < c.NumLayers; layer++)
        {
            var entries = new List<WeightEntry>();
            foreach (WeightRole role in Enum.GetValues<WeightRole>())
            {
                if (!ModelFamily.IsLayerRole(role) || !family.Has(role)) continue;
                var e = Entry(role, layer, ModelFamily.IsBlockLinear(role) ? linear : WeightStorage.Activation);
                if (e is not null) entries.Add(e);
            }
            if (fuseFinalNorm && layer == c.NumLayers - 1) entries.Add(Entry(WeightRole.FinalNorm, 0, WeightStorage.Activation)!);
            owners.Add(new WeightOwner(Piece.BlockName(layer), entries));
        }

        var head = new List<WeightEntry>();
        if (!fuseFinalNorm) head.Add(Entry(WeightRole.FinalNorm, 0, WeightStorage.Activation)!);
        WeightStorage headStorage = quantizeLmHead && scheme.IsQuantized ? WeightStorage.Quantized : WeightStorage.Activation;
        string lmHeadName = family.TensorName(WeightRole.LmHead);
        bool tied = c.TieWordEmbeddings || !(checkpoint.Contains(lmHeadName) || IsPrequantized(checkpoint, lmHeadName));
        head.Add(tied
            ? Entry(WeightRole.LmHead, 0, headStorage, sourceOverride: family.TensorName(WeightRole.Embedding), keyOverride: lmHeadName)!
            : Entry(WeightRole.LmHead, 0, headStorage)!);
        owners.Add(new WeightOwner("lm_head", head));
        return owners;

        static bool FamilyLayer(WeightRole role) => ModelFamily.IsLayerRole(role);
    }

    /// <summary>
    /// Marks the pre-quantized weights kept quantized whose g_idx permutes their inputs (act-order): their graphs gather
    /// the input first. Dequantized weights (Quantize=bf16/f16) are written in source order and need no gather.
    /// </summary>
    private static List<WeightOwner> MarkPermutedInputs(List<WeightOwner> owners, ModelConfig config, ICheckpoint checkpoint, string modelDir)
    {
        var format = PreQuantizedFormat.FromConfig(config.QuantizationConfig, Path.Combine(modelDir, "config.json"));
        if (format is null) return owners;
        return owners.Select(o => o with
        {
            Entries = o.Entries.Select(e => e.Storage == WeightStorage.Quantized && IsPrequantized(checkpoint, e.SourceTensor)
                && PreQuantizedUnpacker.PermutesInputs(checkpoint, format, e.SourceTensor) ? e with { InputPermuted = true } : e).ToList(),
        }).ToList();
    }

    /// <summary>A pre-quantized checkpoint stores x.qweight (GPTQ, AWQ) or x.weight_packed (compressed-tensors) instead of x.weight.</summary>
    private static bool IsPrequantized(ICheckpoint checkpoint, string weightName) =>
        weightName.EndsWith(".weight", StringComparison.Ordinal) && PreQuantizedUnpacker.IsPacked(checkpoint, weightName);

    /// <summary>
    /// The nets of the model, in the order the runtime loads them. SharePrompt replaces block_i by block_prompt_i (the
    /// shared prompt's prefill) and adds block_kv_i for later prefills that attend to it, as UseBlockWithKv does.
    /// DoSample or LoRA split the heads: lm_head emits logits and greedy_head / sample_head pick the token.
    /// </summary>
    public static List<Piece> BuildPieces(BuildOptions o, ModelConfig c)
    {
        var pieces = new List<Piece>();
        if (!o.EmbeddingDisk)
        {
            pieces.Add(new Piece("embedding", PieceKind.Embedding, -1, "embedding"));
            pieces.Add(new Piece("embedding_cache", PieceKind.EmbeddingCache, -1, "embedding"));
        }
        for (int i = 0; i < c.NumLayers; i++)
        {
            string owner = Piece.BlockName(i);
            pieces.Add(o.SharePrompt
                ? new Piece($"block_prompt_{i}", PieceKind.BlockPrompt, i, owner)
                : new Piece(owner, PieceKind.Block, i, owner));
            if (o.UseBlockWithKv || o.SharePrompt) pieces.Add(new Piece($"block_kv_{i}", PieceKind.BlockKv, i, owner));
            pieces.Add(new Piece($"block_cache_{i}", PieceKind.BlockCache, i, owner));
        }
        pieces.Add(new Piece("lm_head", PieceKind.LmHead, -1, "lm_head"));
        if (o.DoSample || o.LoraMaxRank > 0)
        {
            pieces.Add(new Piece("greedy_head", PieceKind.GreedyHead, -1, null));
            pieces.Add(new Piece("sample_head", PieceKind.SampleHead, -1, null));
        }
        if (o.LoraMaxRank > 0)
        {
            if (!o.EmbeddingDisk)
            {
                pieces.Add(new Piece("embedding_lora", PieceKind.EmbeddingLora, -1, null));
                pieces.Add(new Piece("embedding_cache_lora", PieceKind.EmbeddingCacheLora, -1, null));
            }
            pieces.Add(new Piece("lm_head_lora", PieceKind.LmHeadLora, -1, null));
        }
        return pieces;
    }
}
