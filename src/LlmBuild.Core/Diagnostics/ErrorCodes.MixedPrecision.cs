namespace LlmBuild.Core.Diagnostics;

public static partial class ErrorCodes
{
    [Code("QuantizeBudget is not a size in MiB ('350MiB') or bits per weight ('5.0bpw').")]
    public const string BadQuantizeBudget = "LLMB0234";
    [Code("QuantizeBudget cannot be met or applied: below what every linear at 4 bits takes, above every linear at 8 bits, or the build is not a 4-bit one.")]
    public const string QuantizeBudgetOutOfRange = "LLMB0235";
    [Code("A mixed-precision build's width choice (calibration/widths.json) is missing or does not match the model; build again to compute it.")]
    public const string PrecisionChoiceStale = "LLMB0236";
}
