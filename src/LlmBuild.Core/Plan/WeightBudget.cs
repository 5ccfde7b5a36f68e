using System.Globalization;
using System.Text.RegularExpressions;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Models;

namespace LlmBuild.Core.Plan;

/// <summary>
/// QuantizeBudget: how large a mixed-precision w4 build may be. <c>350MiB</c> bounds every stored weight (all weight
/// files: embedding, blocks, head; what the device-memory check counts as weights); <c>5.0bpw</c> bounds the average
/// stored bits per weight of the block linears, their scales and zero points included (at group 64 asymmetric, all-w4
/// is 4.625 bpw and all-w8 8.625 bpw). The block linears most sensitive on the calibration data are kept at 8 bits until
/// the budget is met (<see cref="Candidates"/> are the linears the choice is made among).
/// </summary>
public sealed partial record WeightBudget(double Value, string Unit)
{
    public const string MiB = "MiB";
    public const string Bpw = "bpw";

    public override string ToString() => Value.ToString("0.###", CultureInfo.InvariantCulture) + Unit;

    [GeneratedRegex(@"^\s*([0-9]+(?:\.[0-9]+)?)\s*(mib|bpw)\s*$", RegexOptions.IgnoreCase | RegexOptions.CultureInvariant)]
    private static partial Regex Syntax();

    /// <summary>Parses the option's text (LLMB0234 for anything else).</summary>
    public static WeightBudget Parse(string text)
    {
        var m = Syntax().Match(text);
        if (!m.Success || !double.TryParse(m.Groups[1].Value, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out double value) || value <= 0)
            throw new LlmBuildException(ErrorCodes.BadQuantizeBudget,
                $"Property QuantizeBudget='{text}' is invalid: expected a positive size in MiB such as '350MiB' (all stored weights) or bits per weight such as '5.0bpw' (the block linears, scales included). Fix the value or remove it.");
        return new WeightBudget(value, m.Groups[2].Value.Equals("bpw", StringComparison.OrdinalIgnoreCase) ? Bpw : MiB);
    }

    /// <summary>The linears the choice is made among: every quantized linear of the decoder layers (not lm_head, not experts or the vision tower).</summary>
    public static IReadOnlyList<WeightEntry> Candidates(ResolvedModel model) =>
        [.. model.Owners.SelectMany(o => o.Entries)
            .Where(e => e.Storage == WeightStorage.Quantized && e.Expert is null && e.Vision is null && ModelFamily.IsLayerRole(e.Role))
            .DistinctBy(e => e.Key).OrderBy(e => e.Layer).ThenBy(e => e.Key, StringComparer.Ordinal)];

    /// <summary>Stored bytes of a quantized [N, K] linear at <paramref name="bits"/>: qweight, f32 scales and u8 zero points.</summary>
    public static long LinearBytes(long n, long k, int bits, int groupSize)
    {
        long groups = groupSize > 0 ? k / groupSize : 1;
        return SaturatingSum(SaturatingProduct(n, k, bits) / 8, SaturatingProduct(n, groups, 5));
    }

    /// <summary>Products and sums of sizes that stop at long.MaxValue instead of wrapping (absurd configs give a coded error later, not an overflow).</summary>
    public static long SaturatingProduct(params long[] factors)
    {
        try
        {
            long p = 1;
            foreach (long f in factors) p = checked(p * f);
            return p;
        }
        catch (OverflowException) { return long.MaxValue; }
    }

    public static long SaturatingSum(long a, long b) => a > long.MaxValue - b ? long.MaxValue : a + b;

    /// <summary>
    /// The bytes the candidates may take in all, checked against what all-w4 and all-w8 take (LLMB0235). <paramref name="otherBytes"/>
    /// is every other stored weight (for a MiB budget).
    /// </summary>
    public long CandidateBytes(ResolvedModel model, long otherBytes)
    {
        if (model.Weights.Bits != 4)
            throw new LlmBuildException(ErrorCodes.QuantizeBudgetOutOfRange,
                $"QuantizeBudget={this} needs a 4-bit Quantize mode (w4bf16 or w4f16; the budget keeps the most sensitive linears at 8 bits), but Quantize={model.Quantize}. Use a w4 mode or remove QuantizeBudget.");
        var candidates = Candidates(model);
        long weights = candidates.Sum(e => e.Shape[0] * e.Shape[1]);
        long low = candidates.Sum(e => LinearBytes(e.Shape[0], e.Shape[1], 4, model.Weights.GroupSize));
        long high = candidates.Sum(e => LinearBytes(e.Shape[0], e.Shape[1], 8, model.Weights.GroupSize));
        string AsBpw(long bytes) => (bytes * 8.0 / weights).ToString("0.###", CultureInfo.InvariantCulture) + "bpw";
        string AsMib(long bytes) => ((bytes + otherBytes) / 1048576.0).ToString("0.#", CultureInfo.InvariantCulture) + "MiB";
        long target = Unit == Bpw ? (long)Math.Floor(Value * weights / 8) : (long)Math.Floor(Value * 1048576) - otherBytes;
        if (target < low || target > high)
            throw new LlmBuildException(ErrorCodes.QuantizeBudgetOutOfRange,
                $"QuantizeBudget={this} is outside what this build can take: every block linear at 4 bits is {(Unit == Bpw ? AsBpw(low) : AsMib(low))}, every one at 8 bits {(Unit == Bpw ? AsBpw(high) : AsMib(high))}. " +
                "Choose a budget between the two (or remove QuantizeBudget for a plain w4 build, or use a w8 mode).");
        return target;
    }
}
