using LlmBuild.Core.Calibration;
using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Models;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Quantization;

namespace LlmBuild.Core.Stages;

/// <summary>
/// Stage 2. Converts or quantizes one weight owner's tensors (embedding, block_i, lm_head) from the source checkpoint
/// into its npz. The checkpoint is opened once per batch of owners and memory-mapped, so owners run in parallel.
/// With QuantizeMethod gptq/awq, <see cref="Calibrate"/> first makes sure the per-layer calibration statistics exist
/// (under <c>calibration/</c> beside the weights), and each block is quantized from its layer's statistics.
/// </summary>
public static class QuantizeStage
{
    public static ICheckpoint OpenSource(ResolvedModel model) => FamilyCheckpoint.OpenForBuild(model.Options.ModelPath, model.Config);

    public static void Run(ICheckpoint source, ResolvedModel model, string owner, string npzPath) =>
        WeightOwnerWriter.Write(source, model, model.Owner(owner), npzPath);

    /// <summary>The statistics folder of a calibrated build (null for rtn), computing what is missing.</summary>
    public static string? Calibrate(ResolvedModel model, string calibrationDir, ICollection<LlmBuildWarning> warnings, Action<string> log)
    {
        if (model.Calibration is null) return null;
        string stats = CalibrationRun.StatisticsDirectory(model, calibrationDir);
        CalibrationRun.EnsureStatistics(model, stats, warnings, log);
        return stats;
    }

    /// <summary>One owner of a calibrated build (an rtn build's owners go through <see cref="Run"/>).</summary>
    public static void RunCalibrated(ICheckpoint source, ResolvedModel model, string owner, string npzPath, string statsDir, string calibrationDir) =>
        CalibrationRun.QuantizeOwner(source, model, model.Owner(owner), npzPath, statsDir, Path.Combine(calibrationDir, "report"));

    /// <summary>Writes calibration/quantization.json and returns the build log's table.</summary>
    public static string WriteCalibrationReport(ResolvedModel model, string calibrationDir) =>
        CalibrationRun.WriteReport(model, Path.Combine(calibrationDir, "report"), Path.Combine(calibrationDir, "quantization.json"));
}
