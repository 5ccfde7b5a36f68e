using System.Text.Json;
using System.Text.Json.Serialization;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Models;

namespace LlmBuild.Core.Plan;

/// <summary>Weight-only quantization: 16 = none (activation dtype), 8 or 4 bits per group of GroupSize along K (0 = per channel).</summary>
public sealed record QuantScheme(int Bits, int GroupSize, bool Symmetric)
{
    [JsonIgnore] public bool IsQuantized => Bits < 16;
}

/// <summary>
/// Everything the stages need, decided once by the resolve stage and written to resolved.json: the options,
/// the model's architecture, its family, the activation dtype, the quantization scheme, the pieces and the
/// weight owners. Later stages read it back; nothing downstream re-derives these decisions.
/// </summary>
public sealed record ResolvedModel
{
    public const int FormatVersion = 2;

    public int Version { get; init; } = FormatVersion;
    public required string Name { get; init; }
    public required BuildOptions Options { get; init; }
    public required ModelConfig Config { get; init; }
    public required string Family { get; init; }
    /// <summary>"bf16" or "f16".</summary>
    public required string ActivationDtype { get; init; }
    /// <summary>The Quantize mode after resolving "auto".</summary>
    public required string Quantize { get; init; }
    public required QuantScheme Weights { get; init; }
    public bool QuantizeLmHead { get; init; }
    /// <summary>Device memory budget for the codegen check, MiB; 0 = the chip's default.</summary>
    public int DeviceMemoryMiB { get; init; }
    /// <summary>"builtin" (LlmBuild's emulator backend) or "tpu-mlir" (model_deploy.py per piece: silicon bmodels).</summary>
    public string CodegenBackend { get; init; } = "builtin";
    /// <summary>Source weight files, relative to the model directory.</summary>
    public required IReadOnlyList<string> WeightFiles { get; init; }
    public required IReadOnlyList<Piece> Pieces { get; init; }
    public required IReadOnlyList<WeightOwner> Owners { get; init; }
    /// <summary>Checkpoint tensors the user dropped on purpose (LlmIgnoreTensors patterns); null when none.</summary>
    public IReadOnlyList<string>? IgnoredTensors { get; init; }
    /// <summary>
    /// True only in a dry run on a folder without weight files: the plan comes from config.json alone (optional tensors
    /// such as biases are not counted), nothing is built.
    /// </summary>
    public bool WeightsAbsent { get; init; }
    /// <summary>True when the final RMSNorm is part of the last block (one device) rather than lm_head.</summary>
    public bool FinalNormInLastBlock { get; init; }
    /// <summary>Vision-language models: the patches one vit run takes (MaxPixels / patch²); 0 without a vision tower.</summary>
    public int VitPatches { get; init; }
    /// <summary>The vision tower's linears are quantized like the LLM's (QuantizeVit); by default they stay in the activation dtype.</summary>
    public bool QuantizeVit { get; init; }
    /// <summary>QuantizeMethod gptq/awq: how the quantize stage calibrates; null for round-to-nearest.</summary>
    public CalibrationSettings? Calibration { get; init; }

    [JsonIgnore] public ModelFamily ModelFamily => ModelFamilies.All.First(f => f.Name == Family);
    [JsonIgnore] public int PrefillLength => Options.PrefillLength;
    [JsonIgnore] public int SeqLength => Options.SeqLength;

    public Piece Piece(string name) => Pieces.FirstOrDefault(p => p.Name == name)
        ?? throw new LlmBuildException(ErrorCodes.StaleIntermediate, $"Piece '{name}' is not part of model '{Name}'. Rebuild to refresh the intermediates.");

    public WeightOwner Owner(string name) => Owners.FirstOrDefault(o => o.Name == name)
        ?? throw new LlmBuildException(ErrorCodes.StaleIntermediate, $"Weight owner '{name}' is not part of model '{Name}'. Rebuild to refresh the intermediates.");

    /// <summary>The stored entry of a role (layer ignored for model-level roles); null when the family or checkpoint lacks it.</summary>
    public WeightEntry? Weight(WeightRole role, int layer = 0) =>
        Owners.SelectMany(o => o.Entries).FirstOrDefault(e => e.Role == role && (!ModelFamily.IsLayerRole(role) || e.Layer == layer));

    /// <summary>The scheme a quantized entry is stored with: the model's, at the entry's own width when it has one (mixed precision, an 8-bit lm_head).</summary>
    public QuantScheme SchemeOf(WeightEntry entry) => entry.Bits is { } bits && bits != Weights.Bits ? Weights with { Bits = bits } : Weights;

    /// <summary>The bytes an entry is stored with in its weight file (quantized: qweight, f32 scales, u8 zero points).</summary>
    public long StoredBytes(WeightEntry e)
    {
        long count = WeightBudget.SaturatingProduct(e.Shape);
        return e.Storage switch
        {
            WeightStorage.Float32 => WeightBudget.SaturatingProduct(count, 4),
            WeightStorage.Activation => WeightBudget.SaturatingProduct(count, GraphDTypes.ActivationBytes(ActivationDtype)),
            _ => WeightBudget.LinearBytes(e.Shape[0], e.Shape.Length > 1 ? e.Shape[1] : 1, SchemeOf(e).Bits, Weights.GroupSize),
        };
    }

    /// <summary>The model with per-entry widths (by source tensor) on its quantized entries; entries not named keep theirs.</summary>
    public ResolvedModel WithWidths(IReadOnlyDictionary<string, int> bits) => this with
    {
        Owners = [.. Owners.Select(o => o with
        {
            Entries = [.. o.Entries.Select(e => e.Storage == WeightStorage.Quantized && bits.TryGetValue(e.SourceTensor, out int b) ? e with { Bits = b == Weights.Bits ? null : b } : e)],
        })],
    };

    public static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        Converters = { new JsonStringEnumConverter() },
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        TypeInfoResolver = PlanJson.WithReflectionFallback(ResolvedModelJsonContext.Default),
    };

    public string ToJson() => JsonSerializer.Serialize(this, Json) + "\n";

    /// <summary>
    /// Reads resolved.json. A mixed-precision build (QuantizeBudget) also reads the widths the quantize stage chose
    /// (<see cref="PrecisionChoice.PathBeside"/>) unless <paramref name="withWidths"/> is false (the quantize stage, which chooses them).
    /// </summary>
    public static ResolvedModel Load(string path, bool withWidths = true)
    {
        ResolvedModel? model;
        try
        {
            model = JsonSerializer.Deserialize<ResolvedModel>(File.ReadAllText(path), Json);
            if (model is null || model.Version != FormatVersion)
                throw new LlmBuildException(ErrorCodes.StaleIntermediate, $"'{path}' was written by another LlmBuild version. Rebuild.", path);
        }
        catch (Exception e) when (e is JsonException or IOException)
        {
            throw new LlmBuildException(ErrorCodes.StaleIntermediate, $"Cannot read '{path}': {e.Message}. Rebuild (dotnet build) to regenerate it.", path, e);
        }
        return withWidths && model.Calibration?.Budget is not null ? PrecisionChoice.Apply(model, PrecisionChoice.PathBeside(path)) : model;
    }
}
