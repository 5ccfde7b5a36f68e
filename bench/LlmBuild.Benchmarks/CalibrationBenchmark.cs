using System.Diagnostics;
using System.Globalization;
using LlmBuild.Core.Calibration;
using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Models;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Reference;
using LlmBuild.Core.Stages;

namespace LlmBuild.Benchmarks;

/// <summary>
/// Calibrated quantization (QuantizeMethod gptq / awq) on the Qwen2.5-0.5B-shaped random checkpoint the `weights`
/// benchmark writes: the layer-by-layer f32 forward with the statistics (Hessians, mean |x|) of every linear input,
/// then GPTQ and AWQ of each measured layer's linears at w4 g64 — wall time per part, and peak RSS over the baseline.
/// The calibration tokens are random ids (the checkpoint is random; the cost does not depend on the text).
/// usage: calibration [checkpoint-dir] [samples (8)] [seq length (128)] [layers to measure (all 24)]
/// </summary>
public sealed class CalibrationBenchmark : IBenchmark
{
    public string Name => "calibration";
    public string Description => "gptq/awq calibration time and peak RSS on the Qwen2.5-0.5B-shaped checkpoint";

    public int Run(string[] args)
    {
        string dir = args.Length > 0 ? args[0] : Path.Combine(Path.GetTempPath(), "llmbuild-bench", "qwen2.5-0.5b-shaped");
        int samples = args.Length > 1 ? int.Parse(args[1], CultureInfo.InvariantCulture) : 8;
        int seqLength = args.Length > 2 ? int.Parse(args[2], CultureInfo.InvariantCulture) : 128;
        int measured = args.Length > 3 ? int.Parse(args[3], CultureInfo.InvariantCulture) : -1;
        if (!File.Exists(Path.Combine(dir, "model.safetensors"))) WeightsBenchmark.WriteCheckpoint(dir);
        var config = ModelConfig.Load(dir);
        var family = ModelFamilies.Get("qwen2");
        int layers = measured < 0 ? config.NumLayers : Math.Min(measured, config.NumLayers);
        var rng = new Random(0);
        int[][] sequences = Enumerable.Range(0, samples).Select(_ => Enumerable.Range(0, seqLength).Select(_ => rng.Next(config.VocabSize)).ToArray()).ToArray();

        GC.Collect();
        long baseline = WeightsBenchmark.ResetPeakRss();
        var statistics = new List<LayerStatistics>();
        var process = Process.GetCurrentProcess();
        TimeSpan cpu0 = process.TotalProcessorTime;
        var forward = Stopwatch.StartNew();
        using (var checkpoint = CheckpointLoader.Open(dir))
        {
            var reference = new ReferenceModel(checkpoint, config);
            CalibrationRun.Collect(reference, sequences, statistics.Add, layers);
        }
        forward.Stop();
        process.Refresh();
        var cpu = new Dictionary<string, double> { ["forward"] = (process.TotalProcessorTime - cpu0).TotalSeconds };
        long forwardPeak = WeightsBenchmark.PeakRss();

        var model = new ResolvedModel
        {
            Name = "bench", Options = new BuildOptions { ModelPath = dir, SeqLength = 512 }, Config = config, Family = family.Name,
            ActivationDtype = "bf16", Quantize = "w4bf16", Weights = new QuantScheme(4, 64, false), WeightFiles = ["model.safetensors"],
            Pieces = [], Owners = WeightsBenchmark.Owners(family),
        };
        var times = new Dictionary<string, double>();
        foreach (string method in new[] { CalibrationSettings.Gptq, CalibrationSettings.Awq })
        {
            var settings = new CalibrationSettings(method, samples, seqLength, 0, false, []);
            process.Refresh();
            TimeSpan start = process.TotalProcessorTime;
            var watch = Stopwatch.StartNew();
            using var build = QuantizeStage.OpenSource(model);
            foreach (var stats in statistics) CalibratedLayer.Quantize(build, model, model.Owner($"block_{stats.Layer}").Entries, stats, settings);
            times[method] = watch.Elapsed.TotalSeconds;
            process.Refresh();
            cpu[method] = (process.TotalProcessorTime - start).TotalSeconds;
        }
        long peak = WeightsBenchmark.PeakRss();
        double scale = (double)config.NumLayers / layers;
        Console.WriteLine($"Qwen2.5-0.5B-shaped, {samples} × {seqLength} calibration tokens, {layers} of {config.NumLayers} layers measured, {Environment.ProcessorCount} cores");
        Console.WriteLine($"load average {File.ReadAllText("/proc/loadavg").Split(' ')[0]} (wall times grow with it; CPU seconds are what the work took)");
        Console.WriteLine($"forward + statistics  {forward.Elapsed.TotalSeconds,8:F1} s wall, {cpu["forward"],8:F1} CPU s   (all layers: ~{cpu["forward"] * scale:F0} CPU s)");
        Console.WriteLine($"gptq w4 g64           {times["gptq"],8:F1} s wall, {cpu["gptq"],8:F1} CPU s   (all layers: ~{cpu["gptq"] * scale:F0} CPU s)");
        Console.WriteLine($"awq w4 g64            {times["awq"],8:F1} s wall, {cpu["awq"],8:F1} CPU s   (all layers: ~{cpu["awq"] * scale:F0} CPU s)");
        Console.WriteLine($"peak RSS over base    {(forwardPeak - baseline) / 1048576.0:F0} MiB in the forward, {(peak - baseline) / 1048576.0:F0} MiB overall (baseline {baseline / 1048576.0:F0} MiB)");
        long statBytes = statistics.Sum(s => s.Groups.Values.Sum(g => (long)g.K * g.K * 4 + g.K * 4));
        Console.WriteLine($"statistics on disk    {statBytes * scale / 1048576.0:F0} MiB for all layers (f32 Hessians)");
        return 0;
    }
}
