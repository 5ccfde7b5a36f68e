using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.Checkpoints;

/// <summary>Finds and opens the weights of a Hugging Face model folder.</summary>
public static class CheckpointLoader
{
    /// <summary>
    /// Opens the folder's weights, preferring safetensors: <c>model.safetensors.index.json</c>, <c>model.safetensors</c>,
    /// other <c>*.safetensors</c> (adapters excluded), then <c>pytorch_model.bin.index.json</c>, <c>pytorch_model.bin</c>,
    /// <c>pytorch_model-*.bin</c>. A coded error when none is present. A path ending in <c>.gguf</c> opens that GGUF file
    /// under Hugging Face names; a folder whose config.json declares block-wise FP8 weights reads them dequantized.
    /// </summary>
    public static ICheckpoint Open(string modelDir)
    {
        if (GgufCheckpoint.IsGgufPath(modelDir)) return GgufCheckpoint.Open(modelDir);
        string dir = Path.GetFullPath(modelDir);
        return Fp8BlockCheckpoint.WrapIfFp8(OpenFolder(dir), dir);
    }

    private static ICheckpoint OpenFolder(string dir)
    {
        if (!Directory.Exists(dir))
            throw new LlmBuildException(ErrorCodes.ModelNotFound, $"Model directory '{dir}' does not exist. Set ModelPath to a Hugging Face checkpoint folder.", dir);
        string Find(string name) => Path.Combine(dir, name);

        if (File.Exists(Find("model.safetensors.index.json"))) return SafetensorsReader.OpenIndex(Find("model.safetensors.index.json"));
        if (File.Exists(Find("model.safetensors"))) return SafetensorsReader.OpenFile(Find("model.safetensors"));
        var loose = Directory.EnumerateFiles(dir, "*.safetensors")
            .Where(f => !Path.GetFileName(f).StartsWith("adapter", StringComparison.Ordinal))
            .Order(StringComparer.Ordinal).ToArray();
        if (loose.Length == 1) return SafetensorsReader.OpenFile(loose[0]);
        if (loose.Length > 1) return SafetensorsReader.OpenFiles(dir, loose);

        if (File.Exists(Find("pytorch_model.bin.index.json"))) return TorchCheckpointReader.OpenIndex(Find("pytorch_model.bin.index.json"));
        if (File.Exists(Find("pytorch_model.bin"))) return TorchCheckpointReader.OpenFiles(dir, [Find("pytorch_model.bin")]);
        var bins = Directory.EnumerateFiles(dir, "pytorch_model-*.bin").Order(StringComparer.Ordinal).ToArray();
        if (bins.Length > 0) return TorchCheckpointReader.OpenFiles(dir, bins);

        throw new LlmBuildException(ErrorCodes.NoWeightFiles,
            $"'{dir}' holds no weights: expected model.safetensors, model.safetensors.index.json with its shards, or pytorch_model*.bin. " +
            "Download the full checkpoint (not only config.json and the tokenizer).", dir);
    }

    /// <summary>
    /// True when <see cref="Open"/> would find weights: a .gguf file, or a folder holding any of the weight files it looks
    /// for. False for a folder with only config.json and the tokenizer (what a dry run before the download sees).
    /// </summary>
    public static bool HasWeightFiles(string modelPath)
    {
        if (GgufCheckpoint.IsGgufPath(modelPath)) return true;
        string dir = Path.GetFullPath(modelPath);
        if (!Directory.Exists(dir)) return false;
        return Directory.EnumerateFiles(dir, "*.safetensors").Any(f => !Path.GetFileName(f).StartsWith("adapter", StringComparison.Ordinal))
            || File.Exists(Path.Combine(dir, "model.safetensors.index.json"))
            || File.Exists(Path.Combine(dir, "pytorch_model.bin.index.json"))
            || File.Exists(Path.Combine(dir, "pytorch_model.bin"))
            || Directory.EnumerateFiles(dir, "pytorch_model-*.bin").Any();
    }

    /// <summary>The weight files <see cref="Open"/> would read, relative to the folder (for MSBuild Inputs).</summary>
    public static IReadOnlyList<string> WeightFiles(string modelDir)
    {
        using var checkpoint = Open(modelDir);
        return checkpoint.Files;
    }

    /// <summary>
    /// The full path of a weight file <see cref="ICheckpoint.Files"/> lists for <paramref name="modelPath"/>: relative to
    /// the folder, or to the folder holding a .gguf file.
    /// </summary>
    public static string WeightFilePath(string modelPath, string file) =>
        Path.Combine(GgufCheckpoint.IsGgufPath(modelPath) ? Path.GetDirectoryName(Path.GetFullPath(modelPath))! : modelPath, file);
}
