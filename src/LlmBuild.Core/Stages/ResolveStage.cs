using System.Globalization;
using System.Reflection;
using System.Text;
using System.Text.Json;
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
        BuildOptions options = BuildOptions.Parse(values);
        // The targets always pass LlmModelName (the project name unless set), so an empty value is the user's: refuse it
        // rather than write bin/.bmodel. Callers that pass no name at all (tests, tools) get the model folder's name.
        string name = values.TryGetValue("LlmModelName", out string? n) ? CheckModelName(n)
            : Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(options.ModelPath)));
        bool quantizeLmHead = ParseBool(values, "QuantizeLmHead");
        int deviceMemory = 0;
        if (values.TryGetValue("DeviceMemoryMiB", out string? dm) && !string.IsNullOrWhiteSpace(dm)
            && (!int.TryParse(dm, NumberStyles.None, CultureInfo.InvariantCulture, out deviceMemory) || deviceMemory < 0))
            throw new LlmBuildException(ErrorCodes.InvalidProperty, $"Property DeviceMemoryMiB='{dm}' is invalid: expected 0 (chip default) or a size in MiB.");
        string backend = values.TryGetValue("LlmCodegenBackend", out string? b) && !string.IsNullOrWhiteSpace(b) ? b.Trim().ToLowerInvariant()
            : DefaultBackend(values.TryGetValue("TpuMlirPath", out string? tpu) ? tpu : null, Environment.GetEnvironmentVariable("PATH"));
        if (backend is not ("builtin" or "tpu-mlir"))
            throw new LlmBuildException(ErrorCodes.InvalidProperty, $"Property LlmCodegenBackend='{b}' is invalid: expected builtin or tpu-mlir.");
        ResolvedModel model = Resolver.Resolve(options, name, quantizeLmHead, warnings) with { DeviceMemoryMiB = deviceMemory, CodegenBackend = backend };
        // The built-in backend's tensor-parallel split must fit the model: one early error rather than one per piece.
        if (backend == "builtin")
        {
            Plan.TensorParallel.Check(model);
            // Weights, KV cache and the prefill nets' contract io need no codegen: an impossible build fails here, in a
            // second, instead of after quantize and export have written gigabytes (codegen checks the exact figure again).
            var chip = Chips.ChipProfile.Get(model.Options.Chip);
            Codegen.DeviceMemoryBudget.Estimate(model, chip).Check(model, chip);
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
    public static void WriteOutputs(ResolvedModel model, string intermediateDir, string? sdkHash = null)
    {
        string specs = Path.Combine(intermediateDir, "specs");
        string sdk = string.IsNullOrWhiteSpace(sdkHash) ? Version : $"{Version} {sdkHash.Trim()}";
        string modelDir = model.Options.ModelPath;
        var sources = model.WeightFiles.Select(f =>
        {
            var info = LinkedFile.Resolve(Path.Combine(modelDir, f));
            return new { File = f, info.Length, Modified = info.LastWriteTimeUtc.Ticks };
        }).ToArray();

        foreach (var owner in model.Owners)
        {
            var spec = new { Stage = "quantize", Sdk = sdk, Owner = owner, model.ActivationDtype, model.Weights, model.Config.QuantizationConfig, ModelDir = modelDir, Sources = sources };
            AtomicFile.WriteAllTextIfChanged(Path.Combine(specs, "weights", owner.Name + ".json"), ToJson(spec));
        }

        var o = model.Options;
        var graphOptions = new
        {
            o.SeqLength, o.PrefillLength, o.Batch, o.Dynamic, o.DoSample, o.LoraMaxRank, o.MaxPrefillKvLength,
            o.UseBlockWithKv, o.SharePrompt, o.EmbeddingDisk, o.NumDevice, o.DistributeStrategy,
        };
        foreach (var piece in model.Pieces)
        {
            var spec = new
            {
                Stage = "export", Sdk = sdk, Piece = piece, model.Family, model.Config, Options = graphOptions, model.ActivationDtype, model.Weights,
                model.QuantizeLmHead, model.FinalNormInLastBlock, OwnerEntries = piece.WeightOwner is null ? null : model.Owner(piece.WeightOwner).Entries,
            };
            AtomicFile.WriteAllTextIfChanged(Path.Combine(specs, "pieces", piece.Name + ".json"), ToJson(spec));
        }

        var codegen = new { Stage = "codegen", Sdk = sdk, model.CodegenBackend, o.Chip, o.NumCore, o.NumDevice, o.DistributeStrategy, model.DeviceMemoryMiB, model.ActivationDtype };
        AtomicFile.WriteAllTextIfChanged(Path.Combine(specs, "codegen.json"), ToJson(codegen));
        var combine = new { Stage = "combine", Sdk = sdk, model.Name, o.Chip, o.EmbeddingDisk, Pieces = model.Pieces.Select(p => p.Name) };
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
        void Line(string key, object? value) => sb.AppendLine(CultureInfo.InvariantCulture, $"  {key,-22} {value}");
        Line("LlmBuild", Version);
        Line("name", m.Name);
        Line("model_type", m.Config.ModelType);
        Line("family", m.Family);
        foreach (var p in typeof(BuildOptions).GetProperties().Where(p => p.GetMethod!.IsPublic && p.CanWrite))
            Line(p.Name, Format(p.GetValue(m.Options)));
        Line("QuantizeLmHead", m.QuantizeLmHead);
        Line("DeviceMemoryMiB", m.DeviceMemoryMiB == 0 ? "chip default" : m.DeviceMemoryMiB);
        Line("codegen backend", m.CodegenBackend);
        Line("resolved quantize", m.Quantize);
        Line("activation dtype", m.ActivationDtype);
        Line("weights", m.Weights.IsQuantized ? $"w{m.Weights.Bits}, group {(m.Weights.GroupSize == 0 ? "per-channel" : m.Weights.GroupSize)}, {(m.Weights.Symmetric ? "symmetric" : "asymmetric")}" : m.ActivationDtype);
        Line("prefill length (L)", m.PrefillLength);
        var c = m.Config;
        Line("dims", $"hidden {c.HiddenSize}, layers {c.NumLayers}, heads {c.NumHeads}, kv heads {c.NumKvHeads}, head_dim {c.HeadDim}, intermediate {c.IntermediateSize}, vocab {c.VocabSize}");
        Line("rope", $"theta {c.RopeTheta}{(c.RopeScaling is null ? "" : $", scaling {c.RopeScaling.Type} x{c.RopeScaling.Factor}")}");
        Line("tie_word_embeddings", c.TieWordEmbeddings);
        Line("weight files", string.Join(", ", m.WeightFiles));
        Line("pieces", $"{m.Pieces.Count}: {string.Join(", ", m.Pieces.Select(p => p.Name))}");
        Line("weight owners", $"{m.Owners.Count}: {string.Join(", ", m.Owners.Select(w => w.Name))}");
        return sb.ToString();
    }

    private static string Format(object? v) => v switch
    {
        null => "",
        bool b => b ? "true" : "false",
        string s when s.Length == 0 => "(default)",
        _ => Convert.ToString(v, CultureInfo.InvariantCulture) ?? "",
    };

    private static bool ParseBool(IReadOnlyDictionary<string, string?> values, string name)
    {
        if (!values.TryGetValue(name, out string? v) || string.IsNullOrWhiteSpace(v)) return false;
        return v.Trim().ToLowerInvariant() switch
        {
            "true" or "1" or "yes" => true,
            "false" or "0" or "no" => false,
            _ => throw new LlmBuildException(ErrorCodes.InvalidProperty, $"Property {name}='{v}' is invalid: expected true or false."),
        };
    }

    private static string ToJson(object value) => JsonSerializer.Serialize(value, ResolvedModel.Json) + "\n";
}
