using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.Plan;

/// <summary>
/// How the quantize stage rounds w4/w8 weights when it is not round-to-nearest (QuantizeMethod gptq or awq), decided by
/// resolve: the calibration text (files, or none for text the model samples itself), how many sequences of how many
/// tokens, the seed, and GPTQ's act-order. Null in resolved.json for rtn, so an rtn build's files do not change.
/// </summary>
public sealed record CalibrationSettings(string Method, int Samples, int SeqLength, int Seed, bool ActOrder, IReadOnlyList<string> TextFiles)
{
    public const string Rtn = "rtn";
    public const string Gptq = "gptq";
    public const string Awq = "awq";

    /// <summary>
    /// What the calibration statistics (Hessians, mean |x|) depend on — not the method, the group size or act-order, so
    /// switching those reuses the cached forward passes.
    /// </summary>
    /// <summary>QuantizeBudget: mixed w4/w8 widths chosen on the calibration data (any method, rtn included); null: one width.</summary>
    public WeightBudget? Budget { get; init; }

    public string StatisticsKey => $"samples={Samples};seq={SeqLength};seed={Seed};text={string.Join('|', TextFiles)}";

    /// <summary>Reads the calibration options; null for rtn without QuantizeBudget. Refuses builds calibration cannot serve (LLMB0231).</summary>
    public static CalibrationSettings? Read(IReadOnlyDictionary<string, string?> values)
    {
        string method = OptionTable.QuantizeMethod.ReadText(values);
        if (method == "") method = Rtn;
        string budgetText = OptionTable.QuantizeBudget.ReadText(values);
        WeightBudget? budget = budgetText.Length > 0 ? WeightBudget.Parse(budgetText) : null;
        if (method == Rtn && budget is null) return null;
        string[] files = OptionTable.LlmCalibrationText.ReadText(values)
            .Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(f => Path.GetFullPath(f)).Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).ToArray();
        foreach (string file in files)
            if (!File.Exists(file))
                throw new LlmBuildException(ErrorCodes.BadCalibrationText,
                    $"LlmCalibrationText names '{file}', which does not exist. Fix the item's path or remove it (without text the model's own sampled text is used).", file);
        return new CalibrationSettings(method, OptionTable.CalibrationSamples.ReadInteger(values), OptionTable.CalibrationSeqLength.ReadInteger(values),
            OptionTable.CalibrationSeed.ReadInteger(values), OptionTable.GptqActOrder.ReadSwitch(values) && method == Gptq, files) { Budget = budget };
    }

    /// <summary>The resolve-time refusals: calibration needs plain float linears of a dense single-device model.</summary>
    public void CheckModel(ResolvedModel model)
    {
        string? why =
            !model.Weights.IsQuantized ? $"Quantize={model.Quantize} does not quantize the linears (use w4bf16, w4f16, w8bf16 or w8f16)"
            : model.Config.QuantizationConfig is not null ? "the checkpoint is already quantized (its quantization_config is used as it is)"
            : Checkpoints.GgufCheckpoint.IsGgufPath(model.Options.ModelPath) ? "a GGUF source's blocks are used as they are"
            : model.Config.Moe is not null ? "mixture-of-experts layers are not calibrated yet"
            : model.Options.NumDevice > 1 ? "tensor-parallel builds (NumDevice > 1) are not calibrated yet"
            : null;
        if (why is not null)
            throw new LlmBuildException(ErrorCodes.CalibrationUnsupported,
                Budget is null ? $"QuantizeMethod={Method} cannot calibrate this build: {why}. Use QuantizeMethod=rtn."
                : $"QuantizeBudget={Budget} (QuantizeMethod={Method}) needs calibration, which cannot serve this build: {why}. Remove QuantizeBudget and use QuantizeMethod=rtn.");
    }
}
