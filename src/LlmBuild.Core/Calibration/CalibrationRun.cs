using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.IO;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Quantization;
using LlmBuild.Core.Reference;

namespace LlmBuild.Core.Calibration;

/// <summary>
/// The quantize stage's calibration (QuantizeMethod gptq/awq), in two steps:
/// <list type="number">
/// <item><see cref="EnsureStatistics"/>: the calibration sequences go through the f32 reference forward one layer at a
/// time — the hidden states of every sequence at the current layer are all that is held, with that layer's linear
/// inputs — and each layer's <see cref="LayerStatistics"/> is written to obj/…/llm/calibration/stats-&lt;key&gt;/layer_&lt;i&gt;.npz.
/// The key hashes what the statistics depend on (samples, length, seed, the text files' contents, the weight files'
/// sizes and times), not the group size, method or act-order, so changing those reuses the files; when every file of
/// the key is present the forward does not run at all.</item>
/// <item><see cref="QuantizeOwner"/>: a block's weights from its layer's statistics (<see cref="CalibratedLayer"/>), and
/// the block's lines of the report, which <see cref="WriteReport"/> gathers into quantization.json.</item>
/// </list>
/// </summary>
public static class CalibrationRun
{
    private const int FormatVersion = 1;

    public static string StatisticsDirectory(ResolvedModel model, string calibrationRoot)
    {
        var cal = model.Calibration ?? throw new InvalidOperationException("The model is not calibrated (QuantizeMethod=rtn).");
        var key = new StringBuilder().Append(CultureInfo.InvariantCulture, $"v{FormatVersion};{cal.StatisticsKey};");
        foreach (string f in cal.TextFiles) key.Append(Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(f)))).Append(';');
        foreach (string f in model.WeightFiles)
        {
            var info = LinkedFile.Resolve(CheckpointLoader.WeightFilePath(model.Options.ModelPath, f));
            key.Append(CultureInfo.InvariantCulture, $"{f}:{info.Length}:{info.LastWriteTimeUtc.Ticks};");
        }
        string hash = Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(key.ToString())))[..16].ToLowerInvariant();
        return Path.Combine(calibrationRoot, "stats-" + hash);
    }

    /// <summary>Makes sure every layer's statistics file exists under <paramref name="statsDir"/>; runs the forward when one is missing.</summary>
    public static void EnsureStatistics(ResolvedModel model, string statsDir, ICollection<LlmBuildWarning> warnings, Action<string> log)
    {
        int layers = model.Config.NumLayers;
        AtomicFile.DeleteStaleTemporaries(statsDir);
        bool complete = Enumerable.Range(0, layers).All(l => File.Exists(Path.Combine(statsDir, LayerStatistics.FileName(l))));
        if (complete)
        {
            log($"calibration statistics up to date ({statsDir})");
            return;
        }
        var cal = model.Calibration!;
        var watch = Stopwatch.StartNew();
        using ICheckpoint checkpoint = CheckpointLoader.Open(model.Options.ModelPath);
        var reference = new ReferenceModel(checkpoint, model.Config, keepWeights: true, droppedTensors: model.IgnoredTensors);
        int[][] sequences = CalibrationText.Sequences(cal, reference, model.Options.ModelPath);
        log($"calibration text: {sequences.Length} × {cal.SeqLength} tokens ({(cal.TextFiles.Count == 0 ? "self-generated" : "from LlmCalibrationText")}) in {watch.Elapsed.TotalSeconds:0.0} s");
        AtomicFile.CreateDirectory(statsDir);
        Collect(reference, sequences, stats =>
        {
            string path = Path.Combine(statsDir, LayerStatistics.FileName(stats.Layer));
            if (!File.Exists(path)) stats.Write(path);
            log($"layer {stats.Layer}: statistics of {stats.Tokens} tokens ({watch.Elapsed.TotalSeconds:0.0} s)");
        });
    }

    /// <summary>
    /// Runs <paramref name="sequences"/> through the reference one layer at a time and hands each layer's statistics to
    /// <paramref name="done"/>. Holds the sequences' hidden states at one layer, that layer's linear inputs and weights.
    /// </summary>
    /// <param name="layers">Only the first layers (a benchmark's sample); all when negative.</param>
    public static void Collect(ReferenceModel reference, int[][] sequences, Action<LayerStatistics> done, int layers = -1)
    {
        reference.Reset();
        float[][] hidden = sequences.Select(s => reference.Embed(s)).ToArray();
        for (int layer = 0; layer < (layers < 0 ? reference.Config.NumLayers : Math.Min(layers, reference.Config.NumLayers)); layer++)
        {
            var collector = new LayerStatistics.Collector();
            for (int s = 0; s < sequences.Length; s++) reference.PrefillLayer(layer, hidden[s], sequences[s].Length, collector.Observe);
            reference.ForgetWeights();
            done(collector.Finish(layer));
        }
    }

    /// <summary>Writes one weight owner; block owners of a calibrated model use their layer's statistics and write their report lines.</summary>
    public static void QuantizeOwner(ICheckpoint checkpoint, ResolvedModel model, WeightOwner owner, string npzPath, string statsDir, string reportDir,
        Action<Numpy.NpzWriter>? addMore = null)
    {
        var layers = owner.Entries.Where(e => e.Storage == WeightStorage.Quantized && Models.ModelFamily.IsLayerRole(e.Role)).Select(e => e.Layer).Distinct().ToArray();
        if (model.Calibration is not { } cal || layers.Length == 0)
        {
            WeightOwnerWriter.Write(checkpoint, model, owner, npzPath, addMore: addMore);
            return;
        }
        var overrides = new WeightOverrides();
        var report = new List<LinearReport>();
        foreach (int layer in layers)
        {
            string path = Path.Combine(statsDir, LayerStatistics.FileName(layer));
            var warnings = new List<LlmBuildWarning>();
            LayerStatistics stats = LayerStatistics.TryRead(path, layer, warnings)
                ?? throw new LlmBuildException(ErrorCodes.CalibrationCacheDiscarded, $"The calibration statistics '{path}' are missing or damaged. Build again to compute them.", path);
            var (o, lines) = CalibratedLayer.Quantize(checkpoint, model, owner.Entries, stats, cal);
            foreach (var (k, v) in o.Quantized) overrides.Quantized[k] = v;
            foreach (var (k, v) in o.Floats) overrides.Floats[k] = v;
            report.AddRange(lines);
        }
        WeightOwnerWriter.Write(checkpoint, model, owner, npzPath, overrides, addMore);
        AtomicFile.WriteAllText(Path.Combine(reportDir, owner.Name + ".json"), JsonSerializer.Serialize(report, ReportJson));
    }

    private static readonly JsonSerializerOptions ReportJson = new() { WriteIndented = true };

    /// <summary>
    /// Gathers the blocks' report lines into quantization.json (method, settings, per linear: bits, RTN's and the
    /// method's output error on the calibration data, AWQ's α) and returns the build log's table.
    /// </summary>
    public static string WriteReport(ResolvedModel model, string reportDir, string reportPath)
    {
        var lines = new List<LinearReport>();
        foreach (var owner in model.Owners)
        {
            string path = Path.Combine(reportDir, owner.Name + ".json");
            if (File.Exists(path)) lines.AddRange(JsonSerializer.Deserialize<List<LinearReport>>(File.ReadAllText(path)) ?? []);
        }
        lines = [.. lines.OrderBy(l => l.Layer).ThenBy(l => l.Role, StringComparer.Ordinal)];
        var cal = model.Calibration!;
        var document = new
        {
            Method = cal.Method, cal.ActOrder, cal.Samples, cal.SeqLength, cal.Seed, Text = cal.TextFiles.Count == 0 ? "self-generated" : string.Join(";", cal.TextFiles.Select(Path.GetFileName)),
            model.Weights.Bits, model.Weights.GroupSize, model.Weights.Symmetric,
            // QuantizeBudget: each line's Bits is the width chosen for it (calibration/widths.json has the choice's figures).
            Budget = cal.Budget?.ToString(), Linears = lines,
        };
        AtomicFile.WriteAllText(reportPath, JsonSerializer.Serialize(document, ReportJson) + "\n");
        var table = new StringBuilder();
        table.AppendLine(CultureInfo.InvariantCulture, $"{"layer",5} {"linear",-10} {"bits",4} {"rtn error",12} {cal.Method + " error",12} {"ratio",6} {"alpha",5}");
        foreach (var l in lines)
            table.AppendLine(CultureInfo.InvariantCulture,
                $"{l.Layer,5} {l.Role,-10} {l.Bits,4} {l.RtnError,12:G4} {l.Error,12:G4} {(l.RtnError > 0 ? l.Error / l.RtnError : 1),6:0.000} {(l.Alpha is { } a ? a.ToString("0.00", CultureInfo.InvariantCulture) : ""),5}");
        return table.ToString();
    }
}
