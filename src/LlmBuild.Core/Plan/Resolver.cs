using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Models;

namespace LlmBuild.Core.Plan;

/// <summary>
/// The resolve stage's decisions: reads config.json, picks the family, resolves Quantize=auto, checks every
/// option against the model, checks the checkpoint has every tensor the family needs with the right shape,
/// and lists the pieces and weight owners.
/// </summary>
public static class Resolver
{
    /// <param name="name">The output model's name (bin/&lt;name&gt;.bmodel).</param>
    /// <param name="quantizeLmHead">Quantize lm_head like the block linears (off by default).</param>
    /// <param name="ignoreTensors">Checkpoint tensors (names or <c>*</c> patterns) the user drops on purpose (LlmIgnoreTensors).</param>
    /// <param name="quantizeVit">Quantize the vision tower's linears like the LLM's (off by default: the tower stays in the activation dtype).</param>
    public static ResolvedModel Resolve(BuildOptions options, string name, bool quantizeLmHead, ICollection<LlmBuildWarning> warnings,
        IReadOnlyList<string>? ignoreTensors = null, bool quantizeVit = false)
    {
        options = options.WithReferenceRules(warnings);
        string modelDir = Path.GetFullPath(options.ModelPath);
        ModelConfig config = ModelConfig.Load(modelDir);
        ModelFamily family = ModelFamilies.Get(config.ModelType, Path.Combine(modelDir, "config.json"));
        var (quantize, activation, scheme) = QuantizationResolver.Resolve(config, options.Quantize, options.QGroupSize, options.Symmetric, warnings);
        CheckGroupSize(config, scheme);
        CheckLengths(options, config, warnings);
        NoteDroppedOptions(options, family, warnings);

        CheckAttention(options, config, family);
        // A GGUF's config is synthesized from its metadata by LlmBuild itself; a folder's config.json is the user's.
        if (!GgufCheckpoint.IsGgufPath(modelDir))
            ConfigFieldAudit.Audit(ModelConfig.ParseObject(Path.Combine(modelDir, "config.json")), family, config, Path.Combine(modelDir, "config.json"), warnings);
        // A dry run before the download (config.json and the tokenizer only) plans from config.json alone: every tensor
        // the family requires, with the shape config.json implies, and none of the optional ones (biases a checkpoint may
        // hold). Without a dry run, missing weights stay LLMB0101.
        bool weightsAbsent = options.DryRun && !CheckpointLoader.HasWeightFiles(modelDir);
        using ICheckpoint? checkpoint = weightsAbsent ? null : FamilyCheckpoint.OpenForBuild(modelDir, config);
        // One device, or a pipeline whose last block device runs whole blocks: the final norm joins the last block.
        bool fuseFinalNorm = options.NumDevice == 1 || PipelineParallel.IsPipeline(options);
        var owners = BuildOwners(config, family, checkpoint, scheme, quantizeLmHead, fuseFinalNorm, modelDir);
        if (checkpoint is not null) owners = MarkPermutedInputs(owners, config, checkpoint, modelDir);
        int vitPatches = 0;
        if (config.Vision is { } vision)
        {
            VisionPlan.CheckOptions(options, family, config);
            vitPatches = VisionPlan.NumPatches(options, family, vision);
            owners.Insert(0, VisionPlan.BuildOwner(family, vision, checkpoint, scheme, quantizeVit, modelDir));
        }
        if (checkpoint is not null) AccountForEveryTensor(checkpoint, family, owners, ignoreTensors ?? [], modelDir, warnings);
        var pieces = BuildPieces(options, config);
        (owners, pieces) = ShareTiedHead(owners, pieces);

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
            WeightFiles = checkpoint?.Files ?? [],
            WeightsAbsent = weightsAbsent,
            Pieces = pieces,
            Owners = owners,
            FinalNormInLastBlock = fuseFinalNorm,
            VitPatches = vitPatches,
            QuantizeVit = vitPatches > 0 && quantizeVit && scheme.IsQuantized,
        };
    }

    private static void CheckGroupSize(ModelConfig c, QuantScheme scheme)
    {
        var ks = new List<(string What, int K)> { ("hidden_size", c.HiddenSize), ("intermediate_size", c.IntermediateSize), ("num_attention_heads × head_dim", c.QDim) };
        if (c.Moe is { } moe)
        {
            // Every expert's down_proj is quantized like a dense one, with K = the expert's intermediate size.
            ks.Add(("moe_intermediate_size", moe.ExpertIntermediateSize));
            if (moe.HasSharedExpert) ks.Add(("shared_expert_intermediate_size", moe.SharedExpertIntermediateSize));
        }
        foreach (var (what, k) in ks) GroupSizeRule.Check(scheme, k, $"The linear layers that take {what} ({k}) of this model as inputs");
    }

    private static void CheckLengths(BuildOptions o, ModelConfig c, ICollection<LlmBuildWarning> warnings)
    {
        if (o.SeqLength > c.MaxPositionEmbeddings)
            warnings.Add(new LlmBuildWarning(ErrorCodes.ConflictingProperties,
                $"SeqLength={o.SeqLength} exceeds the model's max_position_embeddings ({c.MaxPositionEmbeddings}); positions past it were never trained."));
    }

    /// <param name="checkpoint">The source weights; null in a dry run without them (config.json decides every shape).</param>
    /// <summary>
    /// Options the current llm_convert.py dropped still build their nets, with a warning; AudioLength is accepted and
    /// checked for every family, and said to change nothing for families without an audio tower (all of them so far).
    /// </summary>
    private static void NoteDroppedOptions(BuildOptions o, ModelFamily family, ICollection<LlmBuildWarning> warnings)
    {
        var dropped = new List<string>();
        if (o.SharePrompt) dropped.Add("SharePrompt (--share_prompt)");
        if (o.MaxPrefillKvLength > 0) dropped.Add("MaxPrefillKvLength (--max_prefill_kv_length)");
        if (dropped.Count > 0)
            warnings.Add(new LlmBuildWarning(ErrorCodes.DroppedOption,
                $"{string.Join(" and ", dropped)}: the current llm_convert.py no longer has {(dropped.Count > 1 ? "these options" : "this option")}. " +
                "LlmBuild still builds their nets (block_prompt_i, a block_kv_i history of MaxPrefillKvLength rows), but a newer runtime may not know them. " +
                "UseHistoryKv (--use_history_kv) with ChunkLength is the current way to reuse a prompt's KV cache."));
        if (o.ChunkLength > 0 && o.Batch > 1)
            warnings.Add(new LlmBuildWarning(ErrorCodes.ChunkedDecodeNeedsOneSequence,
                $"ChunkLength={o.ChunkLength} with Batch={o.Batch}: the chunked decode nets block_cache_<i>_<s> read a prefix of one sequence's KV cache, so they are not built; " +
                "decode runs block_cache_<i> over the whole cache. Prefill chunks (UseHistoryKv) are unaffected. Use Batch=1 to get them."));
        if (o.AudioLength > 0)
            warnings.Add(new LlmBuildWarning(ErrorCodes.AudioLengthUnused,
                $"AudioLength={o.AudioLength} is for audio families (llm_convert.py's qwen2_5_omni, qwen3_asr); family {family.Name} has no audio tower, so it changes nothing."));
    }

    private static List<WeightOwner> BuildOwners(ModelConfig c, ModelFamily family, ICheckpoint? checkpoint, QuantScheme scheme,
        bool quantizeLmHead, bool fuseFinalNorm, string modelDir)
    {
        long h = c.HiddenSize, q = c.QDim, kv = c.KvDim, inter = c.IntermediateSize, d = c.HeadDim, vocab = c.VocabSize;
        long[] Shape(WeightRole role) => role switch
        {
            WeightRole.Embedding or WeightRole.LmHead => [vocab, h],
            WeightRole.InputNorm or WeightRole.PostAttentionNorm or WeightRole.FinalNorm or WeightRole.OBias or WeightRole.MlpDownBias
                or WeightRole.AttentionOutputNorm or WeightRole.MlpOutputNorm => [h],
            WeightRole.MlpGateBias or WeightRole.MlpUpBias => [inter],
            WeightRole.QProj => [q, h],
            WeightRole.QBias => [q],
            WeightRole.KProj or WeightRole.VProj => [kv, h],
            WeightRole.KBias or WeightRole.VBias => [kv],
            WeightRole.OProj => [h, q],
            WeightRole.QNorm or WeightRole.KNorm => [d],
            WeightRole.MlpGate or WeightRole.MlpUp => [inter, h],
            WeightRole.MlpDown => [h, inter],
            WeightRole.MoeRouter => [c.Moe!.NumExperts, h],
            WeightRole.ExpertGate or WeightRole.ExpertUp => [c.Moe!.ExpertIntermediateSize, h],
            WeightRole.ExpertDown => [h, c.Moe!.ExpertIntermediateSize],
            WeightRole.SharedExpertGate or WeightRole.SharedExpertUp => [c.Moe!.SharedExpertIntermediateSize, h],
            WeightRole.SharedExpertDown => [h, c.Moe!.SharedExpertIntermediateSize],
            WeightRole.SharedExpertSigmoidGate => [1, h],
            _ => throw new InvalidOperationException(role.ToString()),
        };

        WeightEntry? Entry(WeightRole role, int layer, WeightStorage storage, string? sourceOverride = null, string? keyOverride = null, int? expert = null)
        {
            string source = sourceOverride ?? family.TensorName(role, layer, expert ?? 0);
            bool present = checkpoint is null ? !family.OptionalRoles.Contains(role) : checkpoint.Contains(source) || IsPrequantized(checkpoint, source);
            if (!present)
            {
                if (family.OptionalRoles.Contains(role)) return null;
                throw new LlmBuildException(ErrorCodes.MissingWeight,
                    $"Tensor '{source}' ({role}{(expert is { } ex ? $" of expert {ex}" : "")}{(FamilyLayer(role) ? $" of layer {layer}" : "")}) is missing from the checkpoint in '{modelDir}'. " +
                    "Check that the weights belong to this config.json and that every shard is present.", modelDir);
            }
            long[] shape = Shape(role);
            if (checkpoint is not null && checkpoint.Contains(source))
            {
                TensorInfo info = checkpoint.GetInfo(source);
                if (!info.Shape.SequenceEqual(shape))
                    throw new LlmBuildException(ErrorCodes.MissingWeight,
                        $"Tensor '{source}' in '{info.File}' has shape [{string.Join(",", info.Shape)}] but config.json implies [{string.Join(",", shape)}]. " +
                        "Check that the weights belong to this config.json.", info.File);
            }
            return new WeightEntry(role, FamilyLayer(role) ? layer : -1, source, keyOverride ?? source, storage, shape) { Expert = expert };
        }

        var owners = new List<WeightOwner>
        {
            new("embedding", [Entry(WeightRole.Embedding, 0, WeightStorage.Activation)!]),
        };
        WeightStorage linear = scheme.IsQuantized ? WeightStorage.Quantized : WeightStorage.Activation;
        // (1 + w) norms keep their computed weights in f32: rounding 1 + w to bf16 would lose w's low bits.
        WeightStorage normStorage(WeightRole role) =>
            family.NormWeightOffset != 0 && ModelFamily.IsNorm(role) ? WeightStorage.Float32 : WeightStorage.Activation;
        for (int layer = 0; layer < c.NumLayers; layer++)
        {
            var entries = new List<WeightEntry>();
            foreach (WeightRole role in Enum.GetValues<WeightRole>())
            {
                if (!ModelFamily.IsLayerRole(role) || !family.Has(role)) continue;
                // A sparse layer's MLP is its experts; a dense layer of a mixture-of-experts family keeps the dense MLP.
                if (c.IsSparseLayer(layer) ? ModelFamily.IsDenseMlpRole(role) : ModelFamily.IsMoeRole(role)) continue;
                // The router (and the shared expert's gate) stay in the activation dtype: a quantized score could
                // change which experts a token picks.
                WeightStorage storage = ModelFamily.IsBlockLinear(role) ? linear : normStorage(role);
                if (ModelFamily.IsExpertRole(role))
                {
                    for (int expert = 0; expert < c.Moe!.NumExperts; expert++) entries.Add(Entry(role, layer, storage, expert: expert)!);
                    continue;
                }
                var e = Entry(role, layer, storage);
                if (e is not null) entries.Add(e);
            }
            if (fuseFinalNorm && layer == c.NumLayers - 1) entries.Add(Entry(WeightRole.FinalNorm, 0, normStorage(WeightRole.FinalNorm))!);
            owners.Add(new WeightOwner(Piece.BlockName(layer), entries));
        }

        var head = new List<WeightEntry>();
        if (!fuseFinalNorm) head.Add(Entry(WeightRole.FinalNorm, 0, normStorage(WeightRole.FinalNorm))!);
        WeightStorage headStorage = quantizeLmHead && scheme.IsQuantized ? WeightStorage.Quantized : WeightStorage.Activation;
        string lmHeadName = family.TensorName(WeightRole.LmHead);
        bool hasLmHead = checkpoint is null ? !c.TieWordEmbeddings : checkpoint.Contains(lmHeadName) || IsPrequantized(checkpoint, lmHeadName);
        // Untied without an lm_head, Hugging Face would start from a random output layer: the checkpoint is incomplete.
        if (!c.TieWordEmbeddings && !hasLmHead)
            throw new LlmBuildException(ErrorCodes.MissingWeight,
                $"config.json says tie_word_embeddings is false, but the checkpoint in '{modelDir}' has no '{lmHeadName}'. " +
                "Add the missing shard, or set tie_word_embeddings to true if the model shares its embedding with the output layer.", modelDir);
        bool tied = c.TieWordEmbeddings;
        head.Add(tied
            ? Entry(WeightRole.LmHead, 0, headStorage, sourceOverride: family.TensorName(WeightRole.Embedding), keyOverride: lmHeadName)!
            : Entry(WeightRole.LmHead, 0, headStorage)!);
        owners.Add(new WeightOwner("lm_head", head));
        return owners;

        static bool FamilyLayer(WeightRole role) => ModelFamily.IsLayerRole(role);
    }

    /// <summary>
    /// A tied lm_head kept in the activation dtype holds the embedding's bytes: its entry becomes another reading of the
    /// embedding owner's table (same npz key, so the file stores it once), any other head entry (the final norm when it
    /// is not fused) joins that owner, and the head pieces name the embedding's weight file. A quantized head
    /// (QuantizeLmHead) differs from the table and keeps its own owner.
    /// </summary>
    private static (List<WeightOwner> Owners, List<Piece> Pieces) ShareTiedHead(List<WeightOwner> owners, List<Piece> pieces)
    {
        WeightOwner embedding = owners.Single(o => o.Name == "embedding"), head = owners.Single(o => o.Name == "lm_head");
        WeightEntry table = embedding.Entries.Single(e => e.Role == WeightRole.Embedding);
        WeightEntry headWeight = head.Entries.Single(e => e.Role == WeightRole.LmHead);
        if (headWeight.SourceTensor != table.SourceTensor || headWeight.Storage != table.Storage || !headWeight.Shape.SequenceEqual(table.Shape))
            return (owners, pieces);
        var merged = embedding with
        {
            Entries = [.. embedding.Entries, .. head.Entries.Select(e => e.Role == WeightRole.LmHead ? e with { Key = table.Key } : e)],
        };
        return (owners.Where(o => o != head).Select(o => o == embedding ? merged : o).ToList(),
            pieces.Select(p => p.WeightOwner == head.Name ? p with { WeightOwner = embedding.Name } : p).ToList());
    }

    /// <summary>
    /// Attention features the build implements only in some forms: a sliding window needs the mask input (not Dynamic)
    /// and is a no-op when it covers the whole sequence.
    /// </summary>
    private static void CheckAttention(BuildOptions o, ModelConfig c, ModelFamily family)
    {
        bool windowed = Enumerable.Range(0, c.NumLayers).Any(l => c.WindowOf(l) > 0 && c.WindowOf(l) < o.SeqLength);
        if (windowed && o.Dynamic)
            throw new LlmBuildException(ErrorCodes.ConflictingProperties,
                $"Family {family.Name}: sliding_window {c.SlidingWindows.Where(w => w > 0).Min()} is shorter than SeqLength={o.SeqLength}, and Dynamic=true builds " +
                "prefill nets without an attention mask, which the window needs. Set Dynamic=false, or SeqLength ≤ the window.");
    }

    /// <summary>
    /// Every checkpoint tensor must be consumed by a role of the family (directly, as a fused tensor's part, or as a
    /// pre-quantized weight's companion), be one the family declares ignorable, or be dropped on purpose with
    /// LlmIgnoreTensors (a warning). Anything else means the build would not be the user's model: a coded error.
    /// </summary>
    private static void AccountForEveryTensor(ICheckpoint checkpoint, ModelFamily family, IReadOnlyList<WeightOwner> owners,
        IReadOnlyList<string> ignoreTensors, string modelDir, ICollection<LlmBuildWarning> warnings)
    {
        var consumed = owners.SelectMany(o => o.Entries).Select(e => e.SourceTensor).ToHashSet(StringComparer.Ordinal);
        var (dropped, unknown) = TensorAccounting.Unused(checkpoint, family, consumed, ignoreTensors);
        var tower = TensorAccounting.UnbuiltTower(checkpoint, family);
        if (tower.Count > 0)
            warnings.Add(new LlmBuildWarning(ErrorCodes.VisionTowerIgnored,
                $"'{modelDir}' is a multimodal checkpoint; family {family.Name} builds its language model only and ignores the " +
                $"{tower.Count} tensor(s) of its vision tower and projector: {TensorAccounting.Listing(tower)}. The built model takes text, not images."));
        if (dropped.Count > 0)
            warnings.Add(new LlmBuildWarning(ErrorCodes.UnusedTensor,
                $"LlmIgnoreTensors drops {dropped.Count} checkpoint tensor(s) from the build: {TensorAccounting.Listing(dropped)}. The built model does not use them."));
        if (unknown.Count > 0)
            throw new LlmBuildException(ErrorCodes.UnusedTensor,
                $"{unknown.Count} tensor(s) of the checkpoint in '{modelDir}' are not used by family {family.Name}: {TensorAccounting.Listing(unknown)}. " +
                "Building without them would give a model that is not the checkpoint's (an unknown bias, adapter or renamed weight). " +
                "If the config.json fields that enable them are missing, fix config.json; to drop them deliberately, list them (or * patterns) in LlmIgnoreTensors.",
                modelDir);
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

    /// <summary>
    /// GPTQ with act-order: every quantized linear of the blocks stores its inputs in its own order (input_perm), which
    /// the graph gathers. lm_head keeps the source order (it is not calibrated).
    /// </summary>
    public static IReadOnlyList<WeightOwner> PermuteBlockInputs(IReadOnlyList<WeightOwner> owners) =>
        owners.Select(o => o with
        {
            Entries = o.Entries.Select(e => e.Storage == WeightStorage.Quantized && ModelFamily.IsLayerRole(e.Role) ? e with { InputPermuted = true } : e).ToList(),
        }).ToList();

    /// <summary>A pre-quantized checkpoint stores x.qweight (GPTQ, AWQ) or x.weight_packed (compressed-tensors) instead of x.weight.</summary>
    private static bool IsPrequantized(ICheckpoint checkpoint, string weightName) =>
        weightName.EndsWith(".weight", StringComparison.Ordinal) && PreQuantizedUnpacker.IsPacked(checkpoint, weightName);

    /// <summary>
    /// The nets of the model, in the order the runtime loads them. SharePrompt replaces block_i by block_prompt_i (the
    /// shared prompt's prefill) and adds block_kv_i for later prefills that attend to it, as UseHistoryKv does. ChunkLength
    /// adds the chunked decode nets block_cache_&lt;i&gt;_&lt;s&gt; (<see cref="DecodeSegments"/>) before block_cache_i.
    /// DoSample or LoRA split the heads: lm_head emits logits and greedy_head / sample_head pick the token.
    /// </summary>
    /// <summary>
    /// The history rows of the chunked decode nets block_cache_&lt;i&gt;_&lt;s&gt; (ChunkLength &gt; 0): s = ChunkLength,
    /// 2·ChunkLength, 4·ChunkLength … below SeqLength, ascending; block_cache_&lt;i&gt; covers the rest up to SeqLength. A
    /// decode step runs the smallest net whose history holds the cached tokens, so a short context reads a short cache.
    /// The reference's own list is in its LlmConverter, which this follows as LLM-TPU describes it ("decode is segmented by
    /// KV-cache length … 1K / 2K / 4K / 8K" for a chunk of 1024 and SeqLength 8192).
    /// </summary>
    public static IReadOnlyList<int> DecodeSegments(BuildOptions o)
    {
        var rows = new List<int>();
        // A segment net reads the first s rows of one sequence's cache; with Batch > 1 the slots' caches interleave.
        if (o.ChunkLength <= 0 || o.Batch > 1) return rows;
        for (long s = o.ChunkLength; s < o.SeqLength; s *= 2) rows.Add((int)s);
        return rows;
    }

    public static List<Piece> BuildPieces(BuildOptions o, ModelConfig c)
    {
        var pieces = new List<Piece>();
        if (c.Vision is not null) pieces.Add(new Piece(VisionPlan.VitPiece, PieceKind.Vit, -1, VisionPlan.VitOwner));
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
            if (o.UseHistoryKv || o.SharePrompt) pieces.Add(new Piece($"block_kv_{i}", PieceKind.BlockKv, i, owner));
            foreach (int rows in DecodeSegments(o))
                pieces.Add(new Piece(Piece.SegmentName(i, rows), PieceKind.BlockCache, i, owner) { History = rows });
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
