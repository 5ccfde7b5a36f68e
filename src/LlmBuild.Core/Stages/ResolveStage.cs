using System.Globalization;
using System.Reflection;
using System.Text;
using System.Text.Json;
using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.IO;
using LlmBuild.Core.Models;
using LlmBuild.Core.Plan;

namespace LlmBuild.Core.Stages;

/// <summary>
/// Stage 1. Resolves the options into resolved.json and writes, only when their content changes, the spec files
/// later stages list as inputs: one per weight owner (specs/weights/), one per piece (specs/pieces/), one for
/// codegen and one for combine. A spec holds exactly what its outputs depend on, so an option change reruns only
/// the stages and pieces it affects.
/// </summary>
public static class ResolveStage
{
    /// <summary>The option the SDK targets set to a hash of the SDK's own files (targets, task assemblies, dependency list).</summary>
    public const string SdkHashOption = "LlmBuildSdkHash";

    /// <summary>This LlmBuild's informational version (e.g. 0.1.0+commit).</summary>
    public static string Version { get; } =
        typeof(ResolveStage).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "unknown";

    public static ResolvedModel Resolve(IReadOnlyDictionary<string, string?> values, ICollection<LlmBuildWarning> warnings)
    {
        BuildOptions options = BuildOptions.Parse(values, warnings);
        // The targets always pass LlmModelName (the project name unless set), so an empty value is the user's: refuse it
        // rather than write bin/.bmodel. Callers that pass no name at all (tests, tools) get the model's file or folder name.
        string name = values.TryGetValue("LlmModelName", out string? n) ? CheckModelName(n)
            : Checkpoints.GgufCheckpoint.IsGgufPath(options.ModelPath) ? Path.GetFileNameWithoutExtension(options.ModelPath)
            : Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(options.ModelPath)));
        OptionTable.LlmModelName.CheckValue(name);
        string lmHead = OptionTable.QuantizeLmHead.ReadText(values);
        bool quantizeLmHead = lmHead is "true" or "w8";
        int deviceMemory = OptionTable.DeviceMemoryMiB.ReadInteger(values);
        string backend = OptionTable.LlmCodegenBackend.ReadText(values) is { Length: > 0 } b ? b
            : DefaultBackend(OptionTable.TpuMlirPath.Text(values), Environment.GetEnvironmentVariable("PATH"));
        string[] ignoreTensors = OptionTable.LlmIgnoreTensors.ReadText(values)
            .Split([';', ','], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        bool quantizeVit = OptionTable.QuantizeVit.ReadSwitch(values);
        CalibrationSettings? calibration = CalibrationSettings.Read(values);
        ResolvedModel model = Resolver.Resolve(options, name, quantizeLmHead, warnings, ignoreTensors, quantizeVit) with
        {
            DeviceMemoryMiB = deviceMemory, CodegenBackend = backend, IgnoredTensors = ignoreTensors.Length > 0 ? ignoreTensors : null,
        };
        // QuantizeLmHead=w8: the head keeps 8 bits whatever the model's width (its entry carries its own).
        if (lmHead == "w8" && model.QuantizeLmHead && model.Weights.Bits != 8)
            model = model.WithWidths(model.Owners.SelectMany(o => o.Entries).Where(e => e.Role == WeightRole.LmHead && e.Storage == WeightStorage.Quantized)
                .ToDictionary(e => e.SourceTensor, _ => 8));
        if (calibration is not null)
        {
            calibration.CheckModel(model);
            model = model with { Calibration = calibration, Owners = calibration.ActOrder ? Resolver.PermuteBlockInputs(model.Owners) : model.Owners };
            // A budget that cannot be met fails here, before any forward pass.
            if (calibration.Budget is { } budget)
            {
                var candidates = WeightBudget.Candidates(model).Select(e => e.Key).ToHashSet(StringComparer.Ordinal);
                budget.CandidateBytes(model, model.Owners.SelectMany(o => o.Entries).DistinctBy(e => e.Key).Where(e => !candidates.Contains(e.Key)).Sum(model.StoredBytes));
            }
        }
        if (Checkpoints.GgufCheckpoint.IsGgufPath(model.Options.ModelPath))
        {
            using var gguf = Checkpoints.CheckpointLoader.Open(model.Options.ModelPath);
            NoteGgufRequantization(gguf, model.Quantize, model.Weights, warnings);
        }
        // A pipeline's cut must give every device a net (for either backend: the package is cut from the piece bmodels).
        if (PipelineParallel.IsPipeline(model.Options)) PipelineParallel.Stages(model);
        // The built-in backend's tensor-parallel split must fit the model: one early error rather than one per piece.
        if (backend == "builtin")
        {
            Plan.TensorParallel.Check(model);
            // Weights, KV cache and the prefill nets' contract io need no codegen: an impossible build fails here, in a
            // second, instead of after quantize and export have written gigabytes (codegen checks the exact figure again).
            var chip = Chips.ChipProfile.Get(model.Options.Chip);
            try
            {
                foreach (var budget in Codegen.DeviceMemoryBudget.EstimateDevices(model, chip)) budget.Check(model, chip);
            }
            catch (LlmBuildException e) when (model.Options.DryRun && e.Code == ErrorCodes.DeviceMemoryOverflow)
            {
                // A dry run reports the whole plan, the overflow included; the build itself stops here.
                warnings.Add(new LlmBuildWarning(e.Code, e.Message.Replace(e.Code + ": ", "", StringComparison.Ordinal), e.File));
            }
        }
        return model;
    }

    /// <summary>
    /// LlmModelName becomes bin/&lt;name&gt;.bmodel: it must be a plain, visible file name (not empty, not "." or "..",
    /// no path separators, no leading or trailing space or dot).
    /// </summary>
    public static string CheckModelName(string? name)
    {
        string value = name ?? "";
        string? why =
            value.Trim().Length == 0 ? "is empty"
            : value != value.Trim() ? "starts or ends with white space"
            : value.StartsWith('.') || value.EndsWith('.') ? "starts or ends with a dot"
            : value.IndexOfAny(Path.GetInvalidFileNameChars()) >= 0 || value.Contains('/') || value.Contains('\\') ? "holds a path separator or a character file names cannot hold"
            : value.Length > 200 ? "is longer than 200 characters"
            : null;
        if (why is null) return value;
        throw new LlmBuildException(ErrorCodes.InvalidProperty,
            $"Property LlmModelName='{value}' {why}; it names the output bin/<LlmModelName>.bmodel. Set it to a plain file name such as 'qwen2.5-0.5b' (or remove it to use the project name).");
    }

    /// <summary>
    /// The backend when LlmCodegenBackend is not set (DESIGN §8; the targets decide the same way before resolve runs):
    /// tpu-mlir when TpuMlirPath is set or a PATH entry holds model_deploy.py, else builtin.
    /// </summary>
    public static string DefaultBackend(string? tpuMlirPath, string? path)
    {
        if (!string.IsNullOrWhiteSpace(tpuMlirPath)) return "tpu-mlir";
        foreach (string dir in (path ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
            if (File.Exists(Path.Combine(dir, "model_deploy.py"))) return "tpu-mlir";
        return "builtin";
    }

    /// <summary>
    /// Writes resolved.json, pieces.txt, owners.txt and the spec files under <paramref name="intermediateDir"/>.
    /// <paramref name="sdkHash"/> (the <see cref="SdkHashOption"/> value) joins <see cref="Version"/> in every spec:
    /// another SDK reruns every stage even when its files are older than the outputs.
    /// </summary>
    public static void WriteOutputs(ResolvedModel model, string intermediateDir, string? sdkHash = null) =>
        // Dozens of small files: their fsyncs wait for the disk together, each still before its own rename.
        ConcurrentCommits.Run(() => WriteOutputsCore(model, intermediateDir, sdkHash));

    private static void WriteOutputsCore(ResolvedModel model, string intermediateDir, string? sdkHash)
    {
        string specs = Path.Combine(intermediateDir, "specs");
        string sdk = string.IsNullOrWhiteSpace(sdkHash) ? Version : $"{Version} {sdkHash.Trim()}";
        string modelDir = model.Options.ModelPath;
        var sources = model.WeightFiles.Select(f =>
        {
            var info = LinkedFile.Resolve(Checkpoints.CheckpointLoader.WeightFilePath(modelDir, f));
            return new StageSpecs.SourceFile(f, info.Length, info.LastWriteTimeUtc.Ticks);
        }).ToArray();

        // The owners' and the pieces' specs are different types: one thread starts on the owners, the other on the
        // pieces, so the first-use compilation of their serializers (most of a cold resolve's time) runs on both cores
        // (resolve 185–259 -> 153–187 ms on the 0.5B shape). An owner costs more (its constants digest builds the graphs
        // of its pieces): the pieces' thread then takes owners from the other end of the list. No file's bytes depend on
        // the order; resolved.json is still written last.
        var o = model.Options;
        var graphOptions = new StageSpecs.GraphOptions(
            o.SeqLength, o.PrefillLength, o.Batch, o.Dynamic, o.DoSample, o.LoraMaxRank, o.MaxPrefillKvLength,
            o.UseHistoryKv, o.ChunkLength, o.SharePrompt, o.EmbeddingDisk, o.NumDevice, o.DistributeStrategy, model.VitPatches);
        int nextOwner = 0, endOwner = model.Owners.Count;
        var ownersGate = new object();
        Numerics.Parallelism.For(2, thread =>
        {
            if (thread == 1)
                foreach (var piece in model.Pieces) WritePieceSpec(piece);
            while (true)
            {
                int i;
                lock (ownersGate)
                {
                    if (nextOwner >= endOwner) break;
                    i = thread == 0 ? nextOwner++ : --endOwner;
                }
                WriteOwnerSpec(model.Owners[i]);
            }
        });

        void WriteOwnerSpec(WeightOwner owner)
        {
            // The owner's file also holds the constants of the pieces that name it (RoPE tables sized by SeqLength …):
            // when only they change, the quantize stage copies the stored weights (same WeightsIdentity) instead of
            // quantizing them again.
            var weights = new StageSpecs.OwnerWeights("quantize", sdk, owner, model.ActivationDtype, model.Weights, model.Config.QuantizationConfig, modelDir, sources, model.Calibration);
            var spec = new StageSpecs.Owner("quantize", sdk,
                Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(ToJson(weights)))),
                ExportStage.OwnerConstantsDigest(model, owner.Name), weights);
            AtomicFile.WriteAllTextIfChanged(Path.Combine(specs, "weights", owner.Name + ".json"), ToJson(spec));
        }

        void WritePieceSpec(Piece piece)
        {
            var spec = new StageSpecs.PieceSpec("export", sdk, piece, model.Family, model.Config, graphOptions, model.ActivationDtype, model.Weights,
                model.QuantizeLmHead, model.QuantizeVit, model.FinalNormInLastBlock, piece.WeightOwner is null ? null : model.Owner(piece.WeightOwner).Entries);
            AtomicFile.WriteAllTextIfChanged(Path.Combine(specs, "pieces", piece.Name + ".json"), ToJson(spec));
        }

        var codegen = new StageSpecs.Codegen("codegen", sdk, model.CodegenBackend, o.Chip, o.NumCore, o.NumDevice, o.DistributeStrategy, model.DeviceMemoryMiB, model.ActivationDtype);
        AtomicFile.WriteAllTextIfChanged(Path.Combine(specs, "codegen.json"), ToJson(codegen));
        var combine = new StageSpecs.Combine("combine", sdk, model.Name, o.Chip, o.EmbeddingDisk, o.NumDevice, o.DistributeStrategy, [.. model.Pieces.Select(p => p.Name)]);
        AtomicFile.WriteAllTextIfChanged(Path.Combine(specs, "combine.json"), ToJson(combine));

        // The resolve target's own outputs: always written, so their times mark the last resolve.
        AtomicFile.WriteAllText(Path.Combine(intermediateDir, "owners.txt"), string.Join("\n", model.Owners.Select(w => w.Name)) + "\n");
        AtomicFile.WriteAllText(Path.Combine(intermediateDir, "pieces.txt"),
            string.Join("\n", model.Pieces.Select(p => $"{p.Name} {p.WeightOwner ?? "-"}")) + "\n");
        AtomicFile.WriteAllText(Path.Combine(intermediateDir, "resolved.json"), model.ToJson());
    }

    /// <summary>The human-readable resolved configuration DryRun prints: every option, the family, the pieces.</summary>
    public static string Describe(ResolvedModel m)
    {
        var sb = new StringBuilder();
        sb.AppendLine("=== LlmBuild resolved configuration ===");
        void Line(string key, object? value) => sb.AppendLine(CultureInfo.InvariantCulture, $"  {key,-22} {Format(value)}");
        Line("LlmBuild", Version);
        Line("name", m.Name);
        Line("model_type", m.Config.ModelType);
        Line("family", m.Family);
        foreach (var option in OptionTable.BuildOptionsFields) Line(option.Name, Format(option.Value!(m.Options)));
        Line(OptionTable.QuantizeLmHead.Name, m.QuantizeLmHead && m.Weight(WeightRole.LmHead)?.Bits is { } headBits ? $"w{headBits}" : m.QuantizeLmHead);
        if (m.VitPatches > 0) Line(OptionTable.QuantizeVit.Name, m.QuantizeVit);
        Line(OptionTable.DeviceMemoryMiB.Name, m.DeviceMemoryMiB == 0 ? "chip default" : m.DeviceMemoryMiB);
        Line(OptionTable.QuantizeMethod.Name, m.Calibration is not { } cal ? "rtn"
            : $"{cal.Method}{(cal.ActOrder ? " act-order" : "")}, {cal.Samples} × {cal.SeqLength} tokens, seed {cal.Seed}, " +
              (cal.TextFiles.Count == 0 ? "self-generated text" : $"text from {string.Join(", ", cal.TextFiles.Select(Path.GetFileName))}"));
        if (m.Calibration?.Budget is { } b) Line(OptionTable.QuantizeBudget.Name, $"{b} (the most sensitive block linears at 8 bits, chosen on the calibration data)");
        Line("codegen backend", m.CodegenBackend);
        Line("resolved quantize", m.Quantize);
        Line("activation dtype", m.ActivationDtype);
        Line("weights", m.Weights.IsQuantized ? $"w{m.Weights.Bits}, group {(m.Weights.GroupSize == 0 ? "per-channel" : m.Weights.GroupSize)}, {(m.Weights.Symmetric ? "symmetric" : "asymmetric")}" : m.ActivationDtype);
        Line("prefill length (L)", m.PrefillLength);
        var c = m.Config;
        Line("dims", $"hidden {c.HiddenSize}, layers {c.NumLayers}, heads {c.NumHeads}, kv heads {c.NumKvHeads}, head_dim {c.HeadDim}, intermediate {c.IntermediateSize}, vocab {c.VocabSize}");
        if (c.Moe is { } moe)
            Line("experts", $"{moe.NumExperts} × intermediate {moe.ExpertIntermediateSize}, top {moe.ExpertsPerToken}{(moe.NormalizeTopK ? " renormalised" : "")}" +
                $"{(moe.HasSharedExpert ? $", shared expert intermediate {moe.SharedExpertIntermediateSize}" : "")}, sparse layers " +
                $"{moe.SparseLayers.Count(s => s)} of {c.NumLayers} (all experts computed densely)");
        // Every config fact that changes the math, with the value the build uses (the family's reading of config.json).
        Line("hidden_act", c.HiddenAct);
        Line("norm eps", c.RmsNormEps);
        Line("rope", $"theta {c.RopeTheta}{(c.RopeScaling is null ? "" : $", scaling {c.RopeScaling.Type} x{c.RopeScaling.Factor}")}" +
            $"{(c.RopeScaling?.Type == "longrope" ? $" (original {c.RopeScaling.OriginalMaxPositionEmbeddings}, attention factor {c.RopeScaling.AttentionFactor:0.######})" : "")}" +
            $", rotates {c.RotatedDims} of {c.HeadDim} dims{(c.LocalRopeTheta is { } local ? $", sliding layers theta {local} unscaled" : "")}");
        if (c.MropeSection is { } section) Line("m-rope", $"sections temporal/height/width {string.Join("/", section)} of {c.HeadDim / 2} frequencies");
        if (c.Vision is { } v)
            Line("vision tower", $"depth {v.Depth}, embed {v.EmbedDim}, heads {v.NumHeads}, mlp {v.IntermediateSize} {v.HiddenAct}, patch {v.PatchSize}, temporal {v.TemporalPatchSize}, " +
                $"merge {v.SpatialMergeSize}, out {v.OutHiddenSize}{(v.UsesWindows ? $", window {v.WindowSize} px, full attention in blocks {string.Join(",", v.FullAttentionBlocks)}" : "")}; " +
                $"vit takes {m.VitPatches} patches → {m.VitPatches / v.MergeArea} image tokens");
        Line("attention scale", c.ScoreScale.ToString("0.########", CultureInfo.InvariantCulture));
        var windows = Enumerable.Range(0, c.NumLayers).Where(l => c.WindowOf(l) > 0).ToArray();
        Line("sliding window", windows.Length == 0 ? "none"
            : $"{c.WindowOf(windows[0])} on {windows.Length} of {c.NumLayers} layers{(c.WindowOf(windows[0]) >= m.SeqLength ? " (≥ SeqLength: no effect)" : "")}");
        if (c.EmbeddingMultiplier != 1 || c.ResidualMultiplier != 1 || c.FinalHiddenMultiplier != 1)
            Line("scalings", $"embeddings x{c.EmbeddingMultiplier:0.######}, residual branches x{c.ResidualMultiplier:0.######}, final hidden x{c.FinalHiddenMultiplier:0.######}");
        if (c.AttentionSoftcap > 0 || c.FinalLogitSoftcap > 0)
            Line("soft-capping", $"attention {c.AttentionSoftcap}, final logits {c.FinalLogitSoftcap}");
        Line("tie_word_embeddings", c.TieWordEmbeddings);
        Line("weight files", m.WeightsAbsent
            ? "none yet: weights absent, the plan and memory estimate come from config.json (optional tensors such as biases not counted)"
            : string.Join(", ", m.WeightFiles));
        if (m.CodegenBackend == "builtin")
        {
            var chip = Chips.ChipProfile.Get(m.Options.Chip);
            var budgets = Codegen.DeviceMemoryBudget.EstimateDevices(m, chip);
            foreach (var budget in budgets)
                Line(budgets.Count > 1 ? $"device {budget.Device} memory" : "device memory", string.Create(CultureInfo.InvariantCulture,
                    $"{MiB(budget.TotalBytes)} MiB {(budgets.Count > 1 ? "" : "per device ")}of {MiB(budget.BudgetBytes)} MiB on {chip.Name}{(budget.TotalBytes > budget.BudgetBytes ? " (DOES NOT FIT: LLMB0503)" : "")}: " +
                    $"weights {MiB(budget.WeightBytes)} + KV cache {MiB(budget.KvCacheBytes)} + io {MiB(budget.ActivationBytes)} of {budget.ActivationPiece} (estimate; codegen checks the exact figure)"));
            if (PipelineParallel.IsPipeline(m.Options))
                foreach (var stage in PipelineParallel.Stages(m))
                    Line($"pp device {stage.Device}", $"{stage.FileName(m.Name)}: {string.Join(", ", stage.Pieces)}");
        }
        Line("pieces", $"{m.Pieces.Count}: {string.Join(", ", m.Pieces.Select(p => p.Name))}");
        Line("weight owners", $"{m.Owners.Count}: {string.Join(", ", m.Owners.Select(w => w.Name))}");
        return sb.ToString();
    }

    private static string MiB(long bytes) => (bytes / (1024.0 * 1024.0)).ToString("0.0", CultureInfo.InvariantCulture);

    private static string Format(object? v) => v switch
    {
        null => "",
        bool b => b ? "true" : "false",
        string s when s.Length == 0 => "(default)",
        _ => Convert.ToString(v, CultureInfo.InvariantCulture) ?? "",
    };

    private static string ToJson<T>(T value) => JsonSerializer.Serialize(value, SpecJson) + "\n";

    /// <summary><see cref="ResolvedModel.Json"/> with the specs' compile-time metadata first.</summary>
    private static readonly JsonSerializerOptions SpecJson = new(ResolvedModel.Json)
    {
        TypeInfoResolver = System.Text.Json.Serialization.Metadata.JsonTypeInfoResolver.Combine(StageSpecsJsonContext.Default, ResolvedModel.Json.TypeInfoResolver!),
    };

    /// <summary>
    /// Says in the build log (LLMB0210) which GGUF block types are not kept as they are — everything but Q8_0/Q4_0 in
    /// a matching scheme — and so are dequantized exactly and stored in the resolved mode.
    /// </summary>
    private static void NoteGgufRequantization(ICheckpoint checkpoint, string quantize, QuantScheme scheme, ICollection<LlmBuildWarning> warnings)
    {
        if (checkpoint is not GgufCheckpoint gguf) return;
        var types = gguf.TensorNames.Where(n => GgmlTypes.IsBlockQuantized(gguf.StoredType(n)) && !GgufBlockUnpacker.KeepsExactly(gguf, n, scheme.Bits, scheme.GroupSize, scheme.Symmetric))
            .Select(gguf.StoredType).Distinct().Order().ToArray();
        if (types.Length == 0) return;
        string target = scheme.IsQuantized
            ? $"{quantize} ({scheme.Bits}-bit, group {(scheme.GroupSize == 0 ? "per-channel" : scheme.GroupSize.ToString(System.Globalization.CultureInfo.InvariantCulture))}, {(scheme.Symmetric ? "symmetric" : "asymmetric")}; embeddings and norms in the activation dtype)"
            : quantize;
        warnings.Add(new LlmBuildWarning(ErrorCodes.GgufRequantized,
            $"GGUF tensors of type {string.Join(", ", types.Select(GgmlTypes.Name))} in '{gguf.Gguf.Path}' are dequantized exactly (as ggml does) and stored as {target}. " +
            "Only Q8_0 (w8) and Q4_0 (w4) with QGroupSize 32 and Symmetric map onto A16MatMul unchanged.", gguf.Gguf.Path));
    }
}
