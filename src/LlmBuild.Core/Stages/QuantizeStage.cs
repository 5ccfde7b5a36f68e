using LlmBuild.Core.Calibration;
using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Graph;
using LlmBuild.Core.IO;
using LlmBuild.Core.Numpy;
using LlmBuild.Core.Models;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Quantization;

namespace LlmBuild.Core.Stages;

/// <summary>
/// Stage 2. Converts or quantizes one weight owner's tensors (embedding, block_i, lm_head) from the source checkpoint
/// into its npz. The checkpoint is opened once per batch of owners and memory-mapped, so owners run in parallel.
/// With QuantizeMethod gptq/awq, <see cref="Calibrate"/> first makes sure the per-layer calibration statistics exist
/// (under <c>calibration/</c> beside the weights), and each block is quantized from its layer's statistics. With
/// QuantizeBudget (any method), <see cref="ChooseWidths"/> picks each block linear's width from those statistics first.
/// </summary>
public static class QuantizeStage
{
    public static ICheckpoint OpenSource(ResolvedModel model) => FamilyCheckpoint.OpenForBuild(model.Options.ModelPath, model.Config);

    /// <summary>
    /// Writes the owner's weight file: its weights, then the constants of every piece whose module names the file
    /// (RoPE tables, masks, LoRA zeros; <see cref="ExportStage.OwnerConstants"/>), as TPU-MLIR's own converter lays
    /// out block_i's file for block_i and block_cache_i.
    /// </summary>
    /// <param name="weightsIdentity">
    /// The digest of everything the stored weights depend on (the owner spec's WeightsIdentity). When the file was last
    /// written with the same identity — only the constants changed, e.g. SeqLength — its weight entries are kept as
    /// they are, not quantized again: the file is cut after them and the new constants and zip directory are written
    /// in their place (<see cref="AtomicFile.Rewrite"/>: meanwhile the path has no file, so a build killed then writes
    /// it whole next time), giving the same bytes as a cold write. A file not laid out as <see cref="NpzWriter"/> lays
    /// out its files has its weight entries copied into a new one. The identity lives beside the file
    /// (<see cref="IdentityPath"/>), deleted before the file changes and written after it is in place, so a killed
    /// build never pairs a file with another file's identity (no identity: the weights are quantized again).
    /// </param>
    /// <param name="statsDir">A calibrated build's statistics (<see cref="Calibrate"/>); null: round to nearest.</param>
    /// <param name="calibrationDir">A calibrated build's calibration folder (its per-owner report lines go under report/).</param>
    /// <returns>True when the weights were copied from the previous file rather than quantized.</returns>
    public static bool Run(ICheckpoint source, ResolvedModel model, string owner, string npzPath, string? weightsIdentity = null, string? statsDir = null, string? calibrationDir = null)
    {
        var constants = ExportStage.OwnerConstants(model, owner);
        if (weightsIdentity is not null) weightsIdentity = WithWidths(model, owner, weightsIdentity);
        string identityPath = IdentityPath(npzPath);
        int? reusable = weightsIdentity is null ? null : ReusableWeightEntries(npzPath, identityPath, weightsIdentity);
        if (File.Exists(identityPath)) AtomicFile.Delete(identityPath);
        // The weights stay where they are: only the constants after them and the zip directory are written again.
        NpzResumePoint? resume = reusable is { } count ? NpzWriter.FindResumePoint(npzPath, count) : null;
        if (resume is not null)
        {
            AtomicFile.Rewrite(npzPath, stream =>
            {
                using var npz = new NpzWriter(stream, resume);
                GraphNpz.AddConstants(npz, constants);
                npz.Finish();
            });
        }
        else if (reusable is { } copied)
        {
            using var previous = new NpzReader(npzPath);
            AtomicFile.Write(npzPath, stream =>
            {
                using var npz = new NpzWriter(stream, leaveOpen: true);
                foreach (NpzEntry e in previous.Entries.Take(copied)) npz.CopyEntry(previous, e.Key);
                GraphNpz.AddConstants(npz, constants);
                npz.Finish();
            });
        }
        else if (statsDir is not null && calibrationDir is not null)
            CalibrationRun.QuantizeOwner(source, model, model.Owner(owner), npzPath, statsDir, Path.Combine(calibrationDir, "report"), npz => GraphNpz.AddConstants(npz, constants));
        else WeightOwnerWriter.Write(source, model, model.Owner(owner), npzPath, addMore: npz => GraphNpz.AddConstants(npz, constants));
        if (weightsIdentity is not null)
        {
            // Right after the weight file is at its path (inside ConcurrentCommits.Run its fsync and rename come later, on
            // an I/O thread, which then writes this; a build killed before then leaves no identity and no new file).
            ConcurrentCommits.AfterInPlace(npzPath, () => WriteIdentity(npzPath, weightsIdentity, constants.Count));
        }
        return reusable is not null;
    }

    /// <summary>
    /// Writes the identity of an up-to-date owner's weight file when it is missing: a build killed between a weight
    /// file's rename and its identity's leaves that file newer than its spec — written from it, so its weights are the
    /// spec's — but without identity, and the owner is not rerun; the resumed build restores the sidecar a cold build
    /// writes (same text). Returns true when it wrote one.
    /// </summary>
    public static bool RestoreIdentity(ResolvedModel model, string owner, string npzPath, string? weightsIdentity)
    {
        string identityPath = IdentityPath(npzPath);
        if (weightsIdentity is null || File.Exists(identityPath) || !File.Exists(npzPath)) return false;
        WriteIdentity(npzPath, WithWidths(model, owner, weightsIdentity), ExportStage.OwnerConstants(model, owner).Count);
        return true;
    }

    /// <summary>
    /// The identity of an owner's stored weights: the spec's, plus each entry's own width. Mixed widths are chosen after
    /// resolve; they join the identity, so a changed choice never reuses the old weights.
    /// </summary>
    private static string WithWidths(ResolvedModel model, string owner, string weightsIdentity) =>
        weightsIdentity + string.Concat(model.Owner(owner).Entries.Where(e => e.Bits is not null).Select(e => $";{e.Key}=w{e.Bits}"));

    /// <summary>
    /// Writes the sidecar naming the weight file's identity and how many of its entries are weights (the rest are the
    /// <paramref name="constants"/> after them). Not fsynced: lost or torn by a power failure, it reads as no identity
    /// and the weights are quantized again.
    /// </summary>
    private static void WriteIdentity(string npzPath, string identity, int constants)
    {
        int weightEntries;
        using (var written = new NpzReader(npzPath)) weightEntries = written.Entries.Count - constants;
        AtomicFile.WriteAllText(IdentityPath(npzPath), $"{identity}\n{weightEntries}\n", durable: false);
    }

    /// <summary>The file beside an owner's weight file that names the identity of its weights and how many entries they are.</summary>
    public static string IdentityPath(string npzPath) => npzPath + ".identity";

    private static int? ReusableWeightEntries(string npzPath, string identityPath, string weightsIdentity)
    {
        if (!File.Exists(npzPath) || !File.Exists(identityPath)) return null;
        string text = File.ReadAllText(identityPath);
        string[] lines = text.Split('\n');
        // Two lines, each ended: a torn file (it is not fsynced) is no identity.
        if (lines.Length != 3 || lines[2].Length != 0 || lines[0] != weightsIdentity || !int.TryParse(lines[1], System.Globalization.CultureInfo.InvariantCulture, out int count)) return null;
        using var previous = new NpzReader(npzPath);
        return count >= 0 && count <= previous.Entries.Count ? count : null;
    }

    /// <summary>The statistics folder of a calibrated build (null for rtn), computing what is missing.</summary>
    public static string? Calibrate(ResolvedModel model, string calibrationDir, ICollection<LlmBuildWarning> warnings, Action<string> log)
    {
        if (model.Calibration is null) return null;
        string stats = CalibrationRun.StatisticsDirectory(model, calibrationDir);
        CalibrationRun.EnsureStatistics(model, stats, warnings, log);
        return stats;
    }

    /// <summary>
    /// QuantizeBudget: chooses every block linear's width from the calibration statistics (<see cref="MixedPrecision"/>),
    /// writes <paramref name="widthsPath"/> (calibration/widths.json) when the choice changed, logs the table and returns
    /// the model with the widths. Other builds are returned as they are.
    /// </summary>
    public static ResolvedModel ChooseWidths(ResolvedModel model, string? statsDir, string widthsPath, Action<string> log)
    {
        if (model.Calibration?.Budget is null || statsDir is null) return model;
        PrecisionChoice choice;
        using (ICheckpoint checkpoint = OpenSource(model)) choice = MixedPrecision.Choose(checkpoint, model, statsDir);
        bool changed = choice.Write(widthsPath);
        // Unchanged content keeps its bytes but not its time: the file is an output of the quantize target, which must
        // not stay older than the inputs this run answered (nothing downstream lists it; they follow the weight files).
        if (!changed) File.SetLastWriteTimeUtc(widthsPath, DateTime.UtcNow);
        log($"mixed precision under QuantizeBudget={choice.Budget} ({widthsPath}{(changed ? "" : ", unchanged")}):\n" + MixedPrecision.Table(choice));
        return PrecisionChoice.Apply(model, widthsPath);
    }

    /// <summary>Writes calibration/quantization.json and returns the build log's table.</summary>
    public static string WriteCalibrationReport(ResolvedModel model, string calibrationDir) =>
        CalibrationRun.WriteReport(model, Path.Combine(calibrationDir, "report"), Path.Combine(calibrationDir, "quantization.json"));
}
