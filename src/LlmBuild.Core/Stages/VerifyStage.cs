using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.IO;
using LlmBuild.Core.Models;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Reference;
using LlmBuild.Core.Runtime;

namespace LlmBuild.Core.Stages;

/// <summary>Minimum fidelity a build must reach: per piece output cosine, final-logit cosine and top-1 agreement.</summary>
public sealed record VerifyThresholds(double PieceCosine, double LogitsCosine, double Top1Agreement)
{
    /// <summary>
    /// Defaults per quantize mode, at least as strict as TPU-MLIR's cosine tolerances (0.99 bf16/f16, 0.95 w8, 0.90 w4) and
    /// chosen from what the example measures (8 prompt tokens + 24 decode steps): worst piece cosine 0.99998 (bf16),
    /// 0.99988 (w8), 0.984 (w4 g64); final-logit cosine 1.0, 0.999999, 0.9998; top-1 agreement 100 %, 100 %, 84 %.
    /// </summary>
    public static VerifyThresholds For(QuantScheme weights) => weights.Bits switch
    {
        16 => new(0.999, 0.999, 0.95),
        8 => new(0.99, 0.99, 0.90),
        _ => new(0.95, 0.95, 0.70),
    };

    /// <summary>What a quantized build is held to against the f32 model on its own quantized weights: the 16-bit thresholds.</summary>
    public static VerifyThresholds OfTheBuildItself => For(new QuantScheme(16, 0, false));
}

/// <summary>How closely one net's outputs follow the reference over every call it made.</summary>
public sealed record PieceFidelity(string Piece, int Calls, double Cosine, double MaxAbsError);

/// <param name="NearTieFlips">
/// Positions whose top-1 differs where the two logit vectors agree to the 16-bit cosine threshold and the reference's own
/// logits of the two tokens are closer than <see cref="VerifyStage.NearTieRmsFactor"/> × the RMS difference of the vectors:
/// ties the build's rounding may resolve either way. The top-1 criterion counts them as agreeing (<see cref="Top1BeyondNearTies"/>).
/// </param>
public sealed record LogitsFidelity(int Positions, double MinCosine, double MeanCosine, double MaxAbsError, double Top1Agreement, int NearTieFlips = 0)
{
    public double Top1BeyondNearTies => Top1Agreement + (double)NearTieFlips / Positions;
}

/// <summary>
/// A quantized build's distance from the f32 reference split in two, over the same positions: the build against the
/// reference run on its quantized-and-dequantized weights (<see cref="FakeQuantCheckpoint"/>: the model the build is meant to
/// compute; held to the 16-bit thresholds), and that quantized model against the unquantized one (what the weights' bits lose,
/// whatever the build does).
/// </summary>
public sealed record QuantizationSplit(int Positions, double BuildMinCosine, double BuildTop1Agreement, int BuildNearTies,
    double QuantizedMinCosine, double QuantizedTop1Agreement)
{
    /// <summary>
    /// The build's top-1 agreement with its quantized model, a position where they differ counted as agreeing when the
    /// model's own logits of the two tokens are closer than <see cref="VerifyStage.NearTieRmsFactor"/> × the RMS difference
    /// of the two logit vectors (a near-tie that the build's bf16 noise may resolve either way) — only at positions whose
    /// logits already meet the 16-bit cosine threshold, so a build whose logits are off is never excused by its own noise.
    /// </summary>
    public double BuildTop1BeyondNearTies => BuildTop1Agreement + (double)BuildNearTies / Positions;

    public bool BuildPasses(VerifyThresholds t) => BuildMinCosine >= t.LogitsCosine && BuildTop1BeyondNearTies >= t.Top1Agreement;
}

/// <summary>verify.json: what was run and measured, the thresholds, and the verdict.</summary>
public sealed record VerifyReport
{
    public required string Model { get; init; }
    public required string Quantize { get; init; }
    public required string Chip { get; init; }
    public required int[] Tokens { get; init; }
    public required int PromptLength { get; init; }
    public required IReadOnlyList<PieceFidelity> Pieces { get; init; }
    public required LogitsFidelity Logits { get; init; }
    public required VerifyThresholds Thresholds { get; init; }
    /// <summary>Round-to-nearest quantized builds of float checkpoints: the build's own error and the quantization's; null otherwise.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public QuantizationSplit? Quantization { get; init; }
    public required IReadOnlyList<string> Failures { get; init; }
    /// <summary>Why verification stopped before its last decode step (a mixture-of-experts routing near-tie); null otherwise.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? StoppedEarly { get; init; }
    public bool Passed => Failures.Count == 0;

    /// <summary>A model that computes NaN gives NaN figures: they are written as "NaN" (and fail the thresholds), not thrown on.</summary>
    public static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public string ToJson() => JsonSerializer.Serialize(this, Json) + "\n";

    /// <summary>The short table for the build log.</summary>
    public IEnumerable<string> Table()
    {
        string F(double v) => v.ToString("0.000000", CultureInfo.InvariantCulture);
        string E(double v) => v.ToString("0.000e+0", CultureInfo.InvariantCulture);
        yield return $"verify {Model} ({Quantize}, {Chip}): {PromptLength} prompt tokens + {Tokens.Length - PromptLength} decode steps vs the f32 reference";
        yield return $"  {"piece",-18} {"calls",5} {"cosine",10} {"max |err|",10}";
        foreach (var p in Pieces) yield return $"  {p.Piece,-18} {p.Calls,5} {F(p.Cosine),10} {E(p.MaxAbsError),10}";
        yield return $"  final logits: min cosine {F(Logits.MinCosine)}, mean {F(Logits.MeanCosine)}, max |err| {E(Logits.MaxAbsError)}, top-1 agreement {Logits.Top1Agreement:P1} over {Logits.Positions} positions" +
            (Logits.NearTieFlips > 0 ? $" ({Logits.Top1BeyondNearTies:P1} counting {Logits.NearTieFlips} near-tie flip(s))" : "");
        if (Quantization is { } q)
        {
            yield return $"  the build vs the f32 model on its own {Quantize} weights: min logits cosine {F(q.BuildMinCosine)}, top-1 agreement {q.BuildTop1Agreement:P1}" +
                (q.BuildNearTies > 0 ? $" ({q.BuildTop1BeyondNearTies:P1} counting {q.BuildNearTies} near-tie flip(s))" : "");
            yield return $"  that quantized model vs the unquantized one (the weights' loss): min logits cosine {F(q.QuantizedMinCosine)}, top-1 agreement {q.QuantizedTop1Agreement:P1}";
        }
        if (StoppedEarly is not null) yield return "  stopped early: " + StoppedEarly;
        yield return Passed ? "  verdict: pass" : "  verdict: FAIL — " + string.Join("; ", Failures);
    }
}

/// <summary>
/// Stage 6: runs the built bmodel in the emulator and the f32 reference (straight from the source checkpoint) on a fixed
/// token sequence — a prompt through the prefill nets, then greedy decode steps chosen by the built model and teacher-forced
/// into the reference — and compares every net's outputs and the final logits. Writes verify.json; fails below thresholds.
/// </summary>
public static class VerifyStage
{
    public const int DefaultPromptLength = 8;
    public const int DefaultDecodeSteps = 24;

    /// <summary>
    /// A mixture-of-experts router whose last chosen expert leads the next one by less than this fraction of its
    /// probability is at a near-tie: the build's rounding may legitimately choose the other expert (the fixture's bf16
    /// build meets one at 0.27 %), and from then on the build and the reference no longer share their state.
    /// </summary>
    public const double RouterNearTie = 0.01;

    /// <summary>
    /// A top-1 flip between two logit vectors is a near-tie when the expected vector's own gap between the two tokens is
    /// below this many times the RMS difference of the vectors (their noise at that position).
    /// </summary>
    public const double NearTieRmsFactor = 3;

    public static VerifyReport Run(ResolvedModel model, string bmodelPath, string reportPath, Action<string>? log = null, VerifyThresholds? thresholds = null)
    {
        VerifyReport report = Measure(model, bmodelPath, FixedPrompt(model), DefaultDecodeSteps, thresholds ?? VerifyThresholds.For(model.Weights));
        AtomicFile.WriteAllText(reportPath, report.ToJson());
        foreach (string line in report.Table()) log?.Invoke(line);
        if (!report.Passed)
            throw new LlmBuildException(ErrorCodes.VerifyFailed,
                $"The built model '{bmodelPath}' does not match the f32 reference closely enough for {model.Quantize}: {string.Join("; ", report.Failures)}. " +
                $"See '{reportPath}'. Use a higher-precision Quantize mode (or a smaller QGroupSize), or set Verify=false to skip the check.", reportPath);
        return report;
    }

    /// <summary>
    /// The build's verify: <see cref="Run"/>, and when it fails for any reason the built model leaves the output folder for
    /// <paramref name="quarantinePath"/> (beside the intermediates), so a complete-looking but unverified bin/*.bmodel is
    /// never left for a later pipeline step to ship. The output being gone also makes the next build combine and verify
    /// again, instead of finding verify.json newer than the model.
    /// </summary>
    public static VerifyReport RunOrQuarantine(ResolvedModel model, string bmodelPath, string reportPath, string quarantinePath,
        Action<string>? log = null, VerifyThresholds? thresholds = null)
    {
        try
        {
            return Run(model, bmodelPath, reportPath, log, thresholds);
        }
        catch (LlmBuildException e)
        {
            string moved = Quarantine(bmodelPath, quarantinePath);
            throw new LlmBuildException(e.Code, $"{e.Message} {moved}", e.File, e);
        }
    }

    private static string Quarantine(string bmodelPath, string quarantinePath)
    {
        if (!File.Exists(bmodelPath)) return "";
        try
        {
            Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(quarantinePath))!);
            File.Move(bmodelPath, quarantinePath, overwrite: true);
            return $"The unverified model was moved out of the output folder to '{quarantinePath}' so it cannot be shipped by mistake.";
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Could not move it: at least take it out of the way under a name that says what it is.
            try { File.Delete(bmodelPath); } catch (Exception d) when (d is IOException or UnauthorizedAccessException) { }
            return File.Exists(bmodelPath)
                ? $"WARNING: '{bmodelPath}' is UNVERIFIED and could not be moved or deleted ({e.Message}); do not ship it."
                : $"The unverified model '{bmodelPath}' was deleted (it could not be moved to '{quarantinePath}': {e.Message}).";
        }
    }

    /// <summary>
    /// A fixed prompt: ids spread over the vocabulary by a fixed rule (the same for every build of a model), at most
    /// MaxInputLength long.
    /// </summary>
    public static int[] FixedPrompt(ResolvedModel model)
    {
        int vocab = model.Config.VocabSize, n = Math.Min(DefaultPromptLength, model.PrefillLength);
        int range = Math.Min(vocab, 32000);
        return Enumerable.Range(0, n).Select(i => (int)((i * 7919L + 1013) % range)).ToArray();
    }

    public static VerifyReport Measure(ResolvedModel model, string bmodelPath, int[] prompt, int decodeSteps, VerifyThresholds thresholds)
    {
        using LlmEmulator emu = LlmEmulator.Load(bmodelPath);
        using ICheckpoint checkpoint = CheckpointLoader.Open(model.Options.ModelPath);
        var reference = new ReferenceModel(checkpoint, model.Config, droppedTensors: model.IgnoredTensors);
        int vocab = model.Config.VocabSize, layers = model.Config.NumLayers;
        // Round-to-nearest builds of float checkpoints: the reference once more over the quantized-and-dequantized weights
        // (re-read per call, so the weights are not held twice), fed the same tokens.
        // Not with a quantized tied head: the head's source is the embedding, which the build keeps unquantized for the lookup,
        // and a checkpoint view can only give that tensor one way.
        bool split = model.Weights.IsQuantized && model.Calibration is null && model.Config.QuantizationConfig is null && model.Config.Vision is null
            && !(model.QuantizeLmHead && model.Config.TieWordEmbeddings);
        using FakeQuantCheckpoint? fakeQuant = split ? new FakeQuantCheckpoint(SavedNameCheckpoint.Wrap(CheckpointLoader.Open(model.Options.ModelPath), model.ModelFamily), model) : null;
        ReferenceModel? quantized = fakeQuant is null ? null : new ReferenceModel(fakeQuant, model.Config, keepWeights: false, droppedTensors: model.IgnoredTensors);
        var buildVsQuantized = new LogitStats(VerifyThresholds.OfTheBuildItself.LogitsCosine);
        var quantizedVsReference = new LogitStats();
        void CompareQuantized(float[] actual, float[] expected, float[] quantizedLogits, int positions)
        {
            for (int p = 0; p < positions; p++)
            {
                buildVsQuantized.Add(actual.AsSpan(p * vocab, vocab), quantizedLogits.AsSpan(p * vocab, vocab));
                quantizedVsReference.Add(quantizedLogits.AsSpan(p * vocab, vocab), expected.AsSpan(p * vocab, vocab));
            }
        }
        decodeSteps = Math.Max(0, Math.Min(decodeSteps, emu.SeqLength - prompt.Length));
        var pieces = new SortedDictionary<string, Stats>(StringComparer.Ordinal);
        var logits = new LogitStats(VerifyThresholds.OfTheBuildItself.LogitsCosine);

        void Compare(string piece, ReadOnlySpan<float> actual, ReadOnlySpan<float> expected, bool newCall = true)
        {
            if (!pieces.TryGetValue(piece, out Stats? s)) pieces[piece] = s = new Stats();
            s.Add(actual, expected, newCall);
        }

        void CompareBlocks(string kind, EmulatorTrace t, ReferenceTrace r)
        {
            Compare(emu.EmbedsOnHost ? "embedding.bin" : kind == "decode" ? "embedding_cache" : "embedding", t.Embeddings, r.Embeddings);
            for (int i = 0; i < layers; i++)
            {
                // The net the emulator ran: a chunked block_cache_i_s (ChunkLength) is verified under its own name.
                string net = t.Nets.Count == layers ? t.Nets[i] : kind switch { "prefill" => emu.PrefillNet(i), "history" => $"block_kv_{i}", _ => $"block_cache_{i}" };
                Compare(net, t.BlockOutputs[i], BlockOutput(r, i));
                Compare(net, t.Keys[i], BuildKeyLayout(r.Keys[i]), newCall: false);
                Compare(net, t.Values[i], r.Values[i], newCall: false);
            }
        }

        float[] BlockOutput(ReferenceTrace r, int i) => i + 1 < layers ? r.LayerInputs[i + 1] : model.FinalNormInLastBlock ? r.NormedHidden : r.LastHidden;

        // A decode step that misses the thresholds while a router of the reference is at a near-tie.
        bool RoutedAcrossNearTie(EmulatorTrace t, ReferenceTrace r, float[] actual, float[] expected) =>
            r.RouterMargin < RouterNearTie
            && (Enumerable.Range(0, layers).Any(i => !(Cosine(t.BlockOutputs[i], BlockOutput(r, i)) >= thresholds.PieceCosine))
                || !(Cosine(actual, expected) >= thresholds.LogitsCosine));

        // The build stores keys in its own head layout when RoPE is partial or interleaved (RotaryLayout).
        ModelFamily family = ModelFamilies.Get(model.Config.ModelType);
        int[]? keyOrder = RotaryLayout.NeedsReorder(family, model.Config) ? RotaryLayout.SourceDimOrder(family, model.Config) : null;
        float[] BuildKeyLayout(float[] keys)
        {
            if (keyOrder is null) return keys;
            var reordered = new float[keys.Length];
            int d = keyOrder.Length;
            for (int head = 0; head < keys.Length / d; head++)
                for (int dim = 0; dim < d; dim++) reordered[head * d + dim] = keys[head * d + keyOrder[dim]];
            return reordered;
        }

        void CompareLogits(float[] actual, float[] expected, int positions)
        {
            for (int p = 0; p < positions; p++)
            {
                Compare("lm_head", actual.AsSpan(p * vocab, vocab), expected.AsSpan(p * vocab, vocab));
                logits.Add(actual.AsSpan(p * vocab, vocab), expected.AsSpan(p * vocab, vocab));
            }
        }

        // Vision-language models: a synthetic image through vit (against the reference tower), its embeddings placed at
        // image-pad tokens in the middle of the prompt, M-RoPE positions from the host's get_rope_index.
        MropePositions? mrope = null;
        float[]? emuImage = null, refImage = null;
        if (model.Config.Vision is { } vision && emu.HasVision)
        {
            // Room for the image's tokens in the prefill, leaving the decode steps room in the KV cache.
            int room = Math.Min(emu.PrefillLength, emu.SeqLength - Math.Min(decodeSteps, emu.SeqLength / 2)) - prompt.Length - 1;
            var (grid, pixels) = SyntheticImage(vision, emu.VitPatches, room);
            emuImage = emu.EncodeImage(VisionInputs.Prepare(pixels, grid, vision, emu.VitPatches));
            refImage = new ReferenceVisionTower(checkpoint, model.Config).Encode(pixels, [grid]);
            Compare(VisionPlan.VitPiece, emuImage, refImage);
            int imageTokens = grid.T * grid.H * grid.W / vision.MergeArea;
            if (imageTokens > 0 && prompt.Length + 1 + imageTokens <= emu.PrefillLength)
            {
                int half = prompt.Length / 2;
                prompt = [.. prompt[..half].Select(id => id == vision.ImageTokenId ? (id + 1) % vocab : id), vision.VisionStartTokenId,
                    .. Enumerable.Repeat(vision.ImageTokenId, imageTokens), .. prompt[half..].Select(id => id == vision.ImageTokenId ? (id + 1) % vocab : id)];
                mrope = MropePositions.Compute(prompt, [grid], vision);
                decodeSteps = Math.Max(0, Math.Min(decodeSteps, emu.SeqLength - prompt.Length));
            }
            else emuImage = refImage = null;
        }

        // Prefill: the whole prompt, or (with block_kv nets) its first half and then the rest through block_kv.
        int head = emu.HasHistoryPrefill && prompt.Length > 1 ? Math.Min((prompt.Length + 1) / 2, emu.HistoryLength) : prompt.Length;
        var et = new EmulatorTrace();
        var rt = new ReferenceTrace();
        float[] emuLogits = mrope is null ? emu.Prefill(prompt.AsSpan(0, head), allPositions: true, et)
            : emu.Prefill(prompt, mrope, emuImage, model.Config.Vision!.ImageTokenId, allPositions: true, et);
        float[] refLogits = mrope is null ? reference.Forward(prompt[..head], rt) : reference.ForwardMultimodal(prompt, mrope.Positions, refImage, rt);
        CompareBlocks("prefill", et, rt);
        CompareLogits(emuLogits, refLogits, head);
        if (quantized is not null) CompareQuantized(emuLogits, refLogits, quantized.Forward(prompt[..head]), head);
        float[] last = emuLogits.AsSpan((head - 1) * vocab, vocab).ToArray();
        if (head < prompt.Length)
        {
            et = new EmulatorTrace();
            rt = new ReferenceTrace();
            emuLogits = emu.PrefillWithHistory(prompt.AsSpan(head), allPositions: true, et);
            refLogits = reference.Forward(prompt[head..], rt);
            CompareBlocks("history", et, rt);
            CompareLogits(emuLogits, refLogits, prompt.Length - head);
            if (quantized is not null) CompareQuantized(emuLogits, refLogits, quantized.Forward(prompt[head..]), prompt.Length - head);
            last = emuLogits.AsSpan((prompt.Length - head - 1) * vocab, vocab).ToArray();
        }
        var tokens = new List<int>(prompt);
        string? stoppedEarly = null;

        // Greedy decode by the built model, teacher-forced into the reference.
        for (int step = 0; step < decodeSteps; step++)
        {
            int token = LlmEmulator.ArgMax(last);
            et = new EmulatorTrace();
            rt = new ReferenceTrace();
            last = emu.Decode(token, et);
            float[] expected = reference.Forward([token], rt);
            if (RoutedAcrossNearTie(et, rt, last, expected))
            {
                stoppedEarly = $"decode step {step}: a mixture-of-experts router of the reference is at a near-tie (its last chosen expert leads " +
                    $"the next by {rt.RouterMargin:P2} < {RouterNearTie:P0}) and the build differs there, as a routing flip does; the runs diverge from here";
                break;
            }
            tokens.Add(token);
            CompareBlocks("decode", et, rt);
            Compare("lm_head", last, expected);
            logits.Add(last, expected);
            if (quantized is not null) CompareQuantized(last, expected, quantized.Forward([token]), 1);
        }

        var fidelity = pieces.Select(kv => new PieceFidelity(kv.Key, kv.Value.Calls, kv.Value.MinCosine, kv.Value.MaxAbs))
            .OrderBy(p => PieceOrder(p.Piece)).ThenBy(p => p.Piece, StringComparer.Ordinal).ToArray();
        var final = new LogitsFidelity(logits.Count, logits.MinCosine, logits.CosineSum / logits.Count, logits.MaxAbs, (double)logits.Agree / logits.Count, logits.NearTies);
        var failures = new List<string>();
        foreach (var p in fidelity.Where(p => !(p.Cosine >= thresholds.PieceCosine)))
            failures.Add($"{p.Piece} cosine {p.Cosine:0.000000} < {thresholds.PieceCosine}");
        if (!(final.MinCosine >= thresholds.LogitsCosine)) failures.Add($"final-logit cosine {final.MinCosine:0.000000} < {thresholds.LogitsCosine}");
        if (!(final.Top1BeyondNearTies >= thresholds.Top1Agreement))
            failures.Add($"top-1 agreement {final.Top1BeyondNearTies:P1}{(final.NearTieFlips > 0 ? $" counting {final.NearTieFlips} near-tie flip(s)" : "")} < {thresholds.Top1Agreement:P0}");
        QuantizationSplit? quantization = quantized is null ? null : new QuantizationSplit(buildVsQuantized.Count,
            buildVsQuantized.MinCosine, (double)buildVsQuantized.Agree / buildVsQuantized.Count, buildVsQuantized.NearTies,
            quantizedVsReference.MinCosine, (double)quantizedVsReference.Agree / quantizedVsReference.Count);
        if (quantization is not null)
        {
            var own = VerifyThresholds.OfTheBuildItself;
            if (!quantization.BuildPasses(own))
                failures.Add($"against the f32 model on its own quantized weights the build reaches logits cosine {quantization.BuildMinCosine:0.000000} " +
                    $"(needs {own.LogitsCosine}) and top-1 agreement {quantization.BuildTop1BeyondNearTies:P1} beyond near-ties (needs {own.Top1Agreement:P0}): the build, not the quantization, is off");
            else if (failures.Count > 0)
                failures.Add($"the build computes its quantized weights' model faithfully (logits cosine {quantization.BuildMinCosine:0.000000}, top-1 " +
                    $"{quantization.BuildTop1Agreement:P1}); the loss is the quantization's: that model itself reaches logits cosine " +
                    $"{quantization.QuantizedMinCosine:0.000000}, top-1 {quantization.QuantizedTop1Agreement:P1} against the unquantized one");
        }
        return new VerifyReport
        {
            Model = model.Name, Quantize = model.Quantize, Chip = model.Options.Chip, Tokens = tokens.ToArray(), PromptLength = prompt.Length,
            Pieces = fidelity, Logits = final, Thresholds = thresholds, Quantization = quantization, Failures = failures, StoppedEarly = stoppedEarly,
        };
    }

    /// <summary>
    /// A deterministic image for verify: the largest square grid of whole merge windows that fits the vit net and, merged,
    /// at most <paramref name="maxTokens"/> prompt tokens (at least one window), with pixel values spread over [−2, 2]
    /// (the range normalised images take).
    /// </summary>
    public static ((int T, int H, int W) Grid, float[] Pixels) SyntheticImage(VisionConfig vision, int netPatches, int maxTokens)
    {
        int m = vision.SpatialMergeSize, side = m;
        while ((side + m) * (side + m) <= netPatches && (side + m) * (side + m) / vision.MergeArea <= Math.Max(1, maxTokens)) side += m;
        var pixels = new float[(long)side * side * vision.PatchDim];
        for (long i = 0; i < pixels.Length; i++) pixels[i] = (float)((i * 2654435761L % 4001) / 1000.0 - 2.0);
        return ((1, side, side), pixels);
    }

    private static int PieceOrder(string piece) =>
        piece == VisionPlan.VitPiece ? -1 : piece.StartsWith("embedding", StringComparison.Ordinal) ? 0 : piece.StartsWith("block_cache_", StringComparison.Ordinal) ? 2
        : piece.StartsWith("block_", StringComparison.Ordinal) ? 1 : 3;

    /// <summary>Cosine of two vectors in double precision (1 when both are zero).</summary>
    public static double Cosine(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        double dot = 0, na = 0, nb = 0;
        for (int i = 0; i < a.Length; i++) { dot += (double)a[i] * b[i]; na += (double)a[i] * a[i]; nb += (double)b[i] * b[i]; }
        return na == 0 && nb == 0 ? 1 : dot / Math.Sqrt(na * nb);
    }

    public static double MaxAbsError(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        double m = 0;
        for (int i = 0; i < a.Length; i++) m = Math.Max(m, Math.Abs((double)a[i] - b[i]));
        return m;
    }

    private static double RmsDifference(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        double sum = 0;
        for (int i = 0; i < a.Length; i++) sum += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        return Math.Sqrt(sum / a.Length);
    }

    private sealed class Stats
    {
        public int Calls;
        public double MinCosine = 1, MaxAbs;

        public void Add(ReadOnlySpan<float> a, ReadOnlySpan<float> b, bool newCall)
        {
            if (a.Length != b.Length) throw new InvalidOperationException($"Compared tensors differ in length ({a.Length} vs {b.Length}).");
            if (newCall) Calls++;
            MinCosine = Math.Min(MinCosine, Cosine(a, b));
            MaxAbs = Math.Max(MaxAbs, MaxAbsError(a, b));
        }
    }

    /// <param name="nearTieMinCosine">Flips are counted as near-ties only at positions whose logits are at least this close in cosine.</param>
    private sealed class LogitStats(double nearTieMinCosine = double.PositiveInfinity)
    {
        public int Count, Agree, NearTies;
        public double MinCosine = 1, CosineSum, MaxAbs;

        public void Add(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
        {
            double c = Cosine(a, b);
            Count++;
            CosineSum += c;
            MinCosine = Math.Min(MinCosine, c);
            MaxAbs = Math.Max(MaxAbs, MaxAbsError(a, b));
            int top = LlmEmulator.ArgMax(a), expected = LlmEmulator.ArgMax(b);
            if (top == expected) Agree++;
            else if (c >= nearTieMinCosine && b[expected] - b[top] < NearTieRmsFactor * RmsDifference(a, b)) NearTies++;
        }
    }
}
