using Microsoft.Build.Framework;
using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.IO;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Stages;

namespace LlmBuild.Tasks;

/// <summary>
/// Stage 2: writes one npz per weight owner (embedding, block_i, lm_head), only for owners that are out of date. With
/// QuantizeMethod gptq/awq it first computes (or reuses) the per-layer calibration statistics under CalibrationDirectory
/// and writes quantization.json there, with its table in the build log. With QuantizeBudget it then chooses every block
/// linear's width (calibration/widths.json, read back by the later stages) before writing the owners.
/// </summary>
public sealed class QuantizeLlmWeights : LlmTask
{
    [Required] public string ResolvedFile { get; set; } = "";
    /// <summary>Identity = owner name; metadata Spec (its spec file) and Npz (its output).</summary>
    [Required] public ITaskItem[] Owners { get; set; } = [];
    /// <summary>Inputs every owner depends on (weight files, SDK files, the task assembly, the calibration text).</summary>
    public ITaskItem[]? SharedInputs { get; set; }
    /// <summary>Where calibration keeps its statistics and report (obj/…/llm/calibration/).</summary>
    public string CalibrationDirectory { get; set; } = "";

    protected override void ExecuteCore()
    {
        // The widths of a QuantizeBudget build are chosen here, after the calibration statistics exist.
        ResolvedModel model = ResolvedModel.Load(ResolvedFile, withWidths: false);
        DeleteStaleTemporariesBeside(Owners.Select(o => o.Path("Npz")));
        var shared = SharedInputs.Paths().ToArray();
        var stale = Owners.Where(o => !Freshness.IsUpToDate([o.Path("Npz")], [o.Path("Spec"), .. shared])).ToList();
        foreach (var o in Owners.Except(stale)) LogPieceUpToDate(o.ItemSpec);
        string widthsPath = PrecisionChoice.PathBeside(ResolvedFile);
        if (stale.Count == 0 && (model.Calibration?.Budget is null || File.Exists(widthsPath)))
        {
            // Every weight file is current: the target ran for a missing identity sidecar or calibration report (its
            // Outputs list them), as a build killed between the last weight file and those leaves. Both name the chosen
            // widths; the report is gathered from the owners' report lines, written with their weight files.
            var current = model.Calibration?.Budget is null ? model : ResolvedModel.Load(ResolvedFile);
            RestoreIdentities(current, Owners);
            if (current.Calibration is not null) QuantizeStage.WriteCalibrationReport(current, CalibrationDirectoryPath);
            return;
        }
        string calibrationDir = CalibrationDirectoryPath;
        var warnings = new List<LlmBuildWarning>();
        string? stats = QuantizeStage.Calibrate(model, calibrationDir, warnings, line => LogProgress($"{Stage}: {line}"));
        foreach (var w in warnings) LogWarning(w);
        model = QuantizeStage.ChooseWidths(model, stats, widthsPath, line => LogProgress($"{Stage}: {line}"));
        RestoreIdentities(model, Owners.Except(stale));
        if (stale.Count == 0) return;
        using ICheckpoint checkpoint = QuantizeStage.OpenSource(model);
        // Each weight file's fsync and rename run on I/O threads while the cores quantize the next owners (ConcurrentCommits).
        ConcurrentCommits.Run(() => RunPieces(stale, o => o.ItemSpec, (o, log) =>
        {
            if (QuantizeStage.Run(checkpoint, model, o.ItemSpec, o.Path("Npz"), WeightsIdentity(o.Path("Spec")), stats, calibrationDir))
                log("weights unchanged: kept in place, constants rewritten");
        }));
        if (stats is not null && !Log.HasLoggedErrors)
            LogProgress($"{Stage}: {model.Calibration!.Method} quantization (output error on the calibration data, per linear; {System.IO.Path.Combine(calibrationDir, "quantization.json")}):\n" +
                QuantizeStage.WriteCalibrationReport(model, calibrationDir));
    }

    private string CalibrationDirectoryPath =>
        CalibrationDirectory.Length > 0 ? CalibrationDirectory : System.IO.Path.Combine(System.IO.Path.GetDirectoryName(ResolvedFile)!, "calibration");

    /// <summary>Writes the missing identity sidecars of up-to-date owners (<see cref="QuantizeStage.RestoreIdentity"/>).</summary>
    private void RestoreIdentities(ResolvedModel model, IEnumerable<ITaskItem> upToDate)
    {
        foreach (var o in upToDate)
            if (QuantizeStage.RestoreIdentity(model, o.ItemSpec, o.Path("Npz"), WeightsIdentity(o.Path("Spec"))))
                LogProgress($"{o.ItemSpec}: identity of its up-to-date weight file restored");
    }

    /// <summary>The owner spec's digest of what its stored weights depend on.</summary>
    private static string? WeightsIdentity(string spec)
    {
        using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(spec));
        return doc.RootElement.TryGetProperty("WeightsIdentity", out var v) ? v.GetString() : null;
    }
}
