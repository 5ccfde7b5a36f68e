using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Plan;

namespace LlmBuild.Cli.Convert;

/// <summary>
/// The image unit of each vision family: max_pixels (W*H) must be a multiple of it, as llm_convert.py checks.
/// Kept here until the vision families join Core's family registry (it belongs on <c>ModelFamily</c>).
/// </summary>
public static class PixelMultiples
{
    /// <summary>model_type → the pixel multiple (patch size × merge size, squared).</summary>
    public static readonly IReadOnlyDictionary<string, int> ByModelType = new Dictionary<string, int>(StringComparer.Ordinal)
    {
        ["qwen2_vl"] = 28 * 28,
        ["qwen2_5_vl"] = 28 * 28,
        ["glm4v"] = 28 * 28,
        ["minicpmv"] = 28 * 28,
        ["qwen3_vl"] = 32 * 32,
        ["qwen3_5"] = 32 * 32,
    };

    /// <summary>
    /// Checks <see cref="BuildOptions.MaxPixels"/> against the model's family. Families without images have no
    /// unit and are not checked; an unreadable config.json is left to the resolve stage to report.
    /// </summary>
    public static void Check(BuildOptions options)
    {
        if (options.MaxPixels.Length == 0) return;
        var (width, height) = BuildOptions.ParseMaxPixels(options.MaxPixels);
        string? modelType = ReadModelType(options.ModelPath);
        if (modelType is null || !ByModelType.TryGetValue(modelType, out int unit)) return;
        long pixels = (long)width * height;
        if (pixels % unit != 0)
        {
            int side = (int)Math.Round(Math.Sqrt(unit));
            throw new LlmBuildException(ErrorCodes.InvalidProperty, string.Create(CultureInfo.InvariantCulture,
                $"Property MaxPixels='{options.MaxPixels}' is invalid: {width}*{height} = {pixels} is not a multiple of {side}*{side} = {unit}, the pixel unit of {modelType}. Use for example {RoundDown(width, side)},{RoundDown(height, side)}."));
        }
    }

    private static int RoundDown(int value, int side) => Math.Max(side, value / side * side);

    private static string? ReadModelType(string modelPath)
    {
        string path = Path.Combine(modelPath, "config.json");
        try
        {
            return JsonNode.Parse(File.ReadAllText(path))?["model_type"]?.GetValue<string>();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or JsonException or InvalidOperationException)
        {
            return null;
        }
    }
}
