using System.Text.Json;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.IO;

namespace LlmBuild.Core.Plan;

/// <summary>
/// One block linear in the mixed-precision choice: the width kept, its output error on the calibration data at 4 and 8 bits
/// (round to nearest), its float output's energy on the same data (Signal), and its stored bytes at either width.
/// </summary>
public sealed record LinearWidth(int Layer, string Role, string Tensor, int Bits, double Error4, double Error8, double Signal, long Bytes4, long Bytes8);

/// <summary>
/// calibration/widths.json: the width of every block linear of a QuantizeBudget build, chosen by the quantize stage
/// on the calibration data and read back by every later stage (<see cref="ResolvedModel.Load"/>), so the weight files,
/// the graphs (A16MatMul weight_bits), codegen, the emulator and the device-memory check agree. Written only when its
/// content changes.
/// </summary>
public sealed record PrecisionChoice(string Budget, long TargetBytes, long Bytes, double BitsPerWeight, IReadOnlyList<LinearWidth> Linears)
{
    public const string FileName = "widths.json";

    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true, TypeInfoResolver = PlanJson.WithReflectionFallback(PrecisionChoiceJsonContext.Default) };

    /// <summary>The file beside resolved.json: &lt;llm&gt;/calibration/widths.json.</summary>
    public static string PathBeside(string resolvedFile) => Path.Combine(Path.GetDirectoryName(Path.GetFullPath(resolvedFile))!, "calibration", FileName);

    /// <summary>Writes the file when its content differs; true when it changed.</summary>
    public bool Write(string path) => AtomicFile.WriteAllTextIfChanged(path, JsonSerializer.Serialize(this, Json) + "\n");

    public static PrecisionChoice Read(string path)
    {
        try
        {
            return JsonSerializer.Deserialize<PrecisionChoice>(File.ReadAllText(path), Json) ?? throw new JsonException("empty");
        }
        catch (Exception e) when (e is JsonException or IOException or UnauthorizedAccessException)
        {
            throw new LlmBuildException(ErrorCodes.PrecisionChoiceStale,
                $"The mixed-precision widths '{path}' cannot be read ({e.Message}). Build again (the quantize stage chooses them from the cached calibration statistics).", path, e);
        }
    }

    /// <summary>The model with the widths of <paramref name="path"/>; every block linear must be listed (LLMB0236 otherwise).</summary>
    public static ResolvedModel Apply(ResolvedModel model, string path)
    {
        var choice = Read(path);
        var bits = choice.Linears.ToDictionary(l => l.Tensor, l => l.Bits, StringComparer.Ordinal);
        var missing = WeightBudget.Candidates(model).Where(e => !bits.ContainsKey(e.SourceTensor)).Select(e => e.SourceTensor).ToList();
        if (missing.Count > 0 || bits.Values.Any(b => b is not (4 or 8)))
            throw new LlmBuildException(ErrorCodes.PrecisionChoiceStale,
                $"The mixed-precision widths '{path}' do not match the model ({(missing.Count > 0 ? $"{missing.Count} linears missing, e.g. '{missing[0]}'" : "a width other than 4 or 8")}). Build again to choose them.", path);
        return model.WithWidths(bits);
    }
}
