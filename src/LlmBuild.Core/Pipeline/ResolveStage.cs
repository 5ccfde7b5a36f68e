using System.Globalization;
using System.Text;
using System.Text.Json;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.IO;

namespace LlmBuild.Core.Pipeline;

/// <summary>
/// Stage 1. Resolves the options into resolved.json and writes, only when their content changes, the spec files
/// later stages list as inputs: one per weight owner (specs/weights/), one per piece (specs/pieces/), one for
/// codegen and one for combine. A spec holds exactly what its outputs depend on, so an option change reruns only
/// the stages and pieces it affects.
/// </summary>
public static class ResolveStage
{
    public static ResolvedModel Resolve(IReadOnlyDictionary<string, string?> values, ICollection<LlmBuildWarning> warnings)
    {
        BuildOptions options = BuildOptions.Parse(values);
        string name = values.TryGetValue("LlmModelName", out string? n) && !string.IsNullOrWhiteSpace(n) ? n.Trim()
            : Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(options.ModelPath)));
        if (name.IndexOfAny(Path.GetInvalidFileNameChars()) >= 0)
            throw new LlmBuildException(ErrorCodes.InvalidProperty, $"Property LlmModelName='{name}' is not a valid file name.");
        bool quantizeLmHead = ParseBool(values, "QuantizeLmHead");
        int deviceMemory = 0;
        if (values.TryGetValue("DeviceMemoryMiB", out string? dm) && !string.IsNullOrWhiteSpace(dm)
            && (!int.TryParse(dm, NumberStyles.None, CultureInfo.InvariantCulture, out deviceMemory) || deviceMemory < 0))
            throw new LlmBuildException(ErrorCodes.InvalidProperty, $"Property DeviceMemoryMiB='{dm}' is invalid: expected 0 (chip default) or a size in MiB.");
        string backend = values.TryGetValue("LlmCodegenBackend", out string? b) && !string.IsNullOrWhiteSpace(b) ? b.Trim().ToLowerInvariant() : "builtin";
        if (backend is not ("builtin" or "tpu-mlir"))
            throw new LlmBuildException(ErrorCodes.InvalidProperty, $"Property LlmCodegenBackend='{b}' is invalid: expected builtin or tpu-mlir.");
        ResolvedModel model = Resolver.Resolve(options, name, quantizeLmHead, warnings);
        return model with { DeviceMemoryMiB = deviceMemory, CodegenBackend = backend };
    }

    /// <summary>Writes resolved.json, pieces.txt, owners.txt and the spec files under <paramref name="intermediateDir"/>.</summary>
    public static void WriteOutputs(ResolvedModel model, string intermediateDir)
    {
        string specs = Path.Combine(intermediateDir, "specs");
        string modelDir = model.Options.ModelPath;
        var sources = model.WeightFiles.Select(f =>
        {
            var info = LinkedFile.Resolve(Path.Combine(modelDir, f));
            return new { File = f, info.Length, Modified = info.LastWriteTimeUtc.Ticks };
        }).ToArray();

        foreach (var owner in model.Owners)
        {
            var spec = new { Stage = "quantize", Owner = owner, model.ActivationDtype, model.Weights, model.Config.QuantizationConfig, ModelDir = modelDir, Sources = sources };
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
                Stage = "export", Piece = piece, model.Family, model.Config, Options = graphOptions, model.ActivationDtype, model.Weights,
                model.QuantizeLmHead, model.FinalNormInLastBlock, OwnerEntries = piece.WeightOwner is null ? null : model.Owner(piece.WeightOwner).Entries,
            };
            AtomicFile.WriteAllTextIfChanged(Path.Combine(specs, "pieces", piece.Name + ".json"), ToJson(spec));
        }

        var codegen = new { Stage = "codegen", model.CodegenBackend, o.Chip, o.NumCore, o.NumDevice, o.DistributeStrategy, model.DeviceMemoryMiB, model.ActivationDtype };
        AtomicFile.WriteAllTextIfChanged(Path.Combine(specs, "codegen.json"), ToJson(codegen));
        var combine = new { Stage = "combine", model.Name, o.Chip, o.EmbeddingDisk, Pieces = model.Pieces.Select(p => p.Name) };
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
