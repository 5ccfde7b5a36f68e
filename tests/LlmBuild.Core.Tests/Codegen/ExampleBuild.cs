using System.Collections.Concurrent;
using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Quantization;
using LlmBuild.Core.Stages;

namespace LlmBuild.Core.Tests.Codegen;

/// <summary>
/// Builds the example model (examples/tiny-qwen2) through the real stages — resolve, quantize, export, compile,
/// combine — once per option set and test run, into a temporary folder, so the codegen, runtime and verify tests share it.
/// </summary>
internal static class ExampleBuild
{
    private static readonly ConcurrentDictionary<string, Lazy<Built>> Cache = new();

    public static string RepoRoot { get; } = FindRoot();
    public static string ModelDir => Path.Combine(RepoRoot, "examples", "tiny-qwen2", "checkpoint");
    public static string GoldensDir => Path.Combine(RepoRoot, "tests", "fixtures", "goldens");

    public sealed record Built(ResolvedModel Model, string Dir, string BModel, string ConfigDir, IReadOnlyDictionary<string, string> PieceBModels);

    /// <summary>The example built with <paramref name="quantize"/> (and extra properties); cached per option set.</summary>
    public static Built Get(string quantize = "bf16", int seqLength = 64, int groupSize = 64, string chip = "bm1684x", params (string Name, string Value)[] extra)
    {
        var props = new SortedDictionary<string, string?>(StringComparer.Ordinal)
        {
            ["ModelPath"] = ModelDir, ["SeqLength"] = seqLength.ToString(), ["Quantize"] = quantize,
            ["QGroupSize"] = groupSize.ToString(), ["Chip"] = chip, ["LlmModelName"] = "tiny-qwen2",
        };
        foreach (var (n, v) in extra) props[n] = v;
        string key = string.Join(";", props.Select(p => $"{p.Key}={p.Value}"));
        return Cache.GetOrAdd(key, _ => new Lazy<Built>(() => BuildNow(props))).Value;
    }

    public static ResolvedModel Resolve(IReadOnlyDictionary<string, string?> props) => ResolveStage.Resolve(props, new List<LlmBuildWarning>());

    /// <summary>The parent of the build folders, in the test run's temporary folder (deleted when the run ends).</summary>
    private static string Root => Path.Combine(Path.GetTempPath(), "example-builds");

    private static Built BuildNow(IReadOnlyDictionary<string, string?> props)
    {
        ResolvedModel model = Resolve(props);
        string dir = Path.Combine(Root, Guid.NewGuid().ToString("N"));
        // Owners and pieces share names (block_0 …): owners get their own folder, as in the build's weights/.
        string weights = Path.Combine(dir, "weights");
        Directory.CreateDirectory(weights);
        // A calibrated build (QuantizeMethod gptq/awq, QuantizeBudget) calibrates as the quantize task does: statistics, then widths.
        string calibration = Path.Combine(dir, "calibration");
        string? stats = QuantizeStage.Calibrate(model, calibration, new List<LlmBuildWarning>(), _ => { });
        model = QuantizeStage.ChooseWidths(model, stats, Path.Combine(calibration, PrecisionChoice.FileName), _ => { });
        using (ICheckpoint checkpoint = QuantizeStage.OpenSource(model))
        {
            Parallel.ForEach(model.Owners, owner => QuantizeStage.Run(checkpoint, model, owner.Name, Path.Combine(weights, owner.FileName),
                statsDir: stats, calibrationDir: stats is null ? null : calibration));
        }
        var pieces = new ConcurrentDictionary<string, string>();
        Parallel.ForEach(model.Pieces, piece =>
        {
            string mlir = Path.Combine(dir, piece.Name + ".mlir");
            string npz = Path.Combine(dir, piece.Name + "_top_weights.npz");
            string bmodel = Path.Combine(dir, piece.Name + ".bmodel");
            // Self-contained piece folders (a copy of the owner's entries beside each module): the tests move pieces around.
            ExportStage.RunSelfContained(model, piece, piece.WeightOwner is null ? null : Path.Combine(weights, model.Owner(piece.WeightOwner).FileName), mlir, npz);
            CompileStage.Run(model, piece, mlir, npz, bmodel);
            MlirCompileCheck.Check(model, piece, mlir, npz, bmodel);
            pieces[piece.Name] = bmodel;
        });
        // The quantized owner files are read only by export: drop them to keep a test run's disk use down.
        Directory.Delete(weights, recursive: true);
        string bin = Path.Combine(dir, "bin");
        string config = Path.Combine(bin, "config");
        // A .gguf model has no folder of config files: combine writes them from its metadata.
        var configFiles = File.Exists(model.Options.ModelPath) ? []
            : Directory.GetFiles(model.Options.ModelPath).Where(f => !f.EndsWith(".safetensors", StringComparison.Ordinal)).ToArray();
        string output = Path.Combine(bin, model.Name + ".bmodel");
        CombineStage.Run(model, model.Pieces.Select(p => pieces[p.Name]).ToArray(), configFiles, output, config);
        return new Built(model, dir, output, config, pieces);
    }

    private static string FindRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "LlmBuild.sln"))) return d.FullName;
        throw new InvalidOperationException("Cannot find the repository root (LlmBuild.sln) above " + AppContext.BaseDirectory);
    }
}
