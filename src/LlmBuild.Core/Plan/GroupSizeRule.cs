using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.Plan;

/// <summary>
/// The QGroupSize rule, stated once: a quantized linear's K inputs split into whole groups (per channel, group 0, is one
/// group of K), and 4-bit weights, packed two per byte, need an even K and an even group. Resolve applies it to every K
/// of the model and to each device's share; the quantizer and the graph builder apply it again to the K they are given,
/// so a caller that skips resolve gets the same coded error (<see cref="ErrorCodes.BadGroupSize"/>) rather than bad bytes.
/// </summary>
public static class GroupSizeRule
{
    /// <summary>The group size actually used for <paramref name="k"/> inputs: K itself when per channel.</summary>
    /// <param name="what">Names the inputs in the message, e.g. "Weight 'model.layers.0.mlp.down_proj.weight'".</param>
    /// <param name="fix">What to do instead, when the default advice (another group size or per channel) is not it.</param>
    public static int Check(int bits, int groupSize, long k, string what, string? fix = null)
    {
        if (bits is not (4 or 8)) throw new ArgumentException($"Weight-only quantization takes 4 or 8 bits, not {bits}.", nameof(bits));
        long g = groupSize > 0 ? groupSize : k;
        if (k % g != 0)
        {
            int dividing = LargestDividingGroup(k);
            throw new LlmBuildException(ErrorCodes.BadGroupSize,
                $"{what}: K={k} inputs, which is not a multiple of QGroupSize={groupSize}, so the weights cannot be split into whole quantization groups. " +
                (fix ?? (dividing > 0 ? $"Use a group size that divides {k} (e.g. QGroupSize={dividing}) or 0 (per channel)." : "Use QGroupSize=0 (per channel).")));
        }
        if (bits == 4 && (k % 2 != 0 || g % 2 != 0))
            throw new LlmBuildException(ErrorCodes.BadGroupSize,
                $"{what}: K={k} inputs with group size {g}; 4-bit weights are packed two per byte, so both must be even. " +
                (fix ?? "Use an even QGroupSize or an 8-bit Quantize mode."));
        return checked((int)g);
    }

    /// <summary>Applies the rule to a scheme; nothing to check when the weights are not quantized.</summary>
    public static void Check(QuantScheme scheme, long k, string what, string? fix = null)
    {
        if (scheme.IsQuantized) Check(scheme.Bits, scheme.GroupSize, k, what, fix);
    }

    /// <summary>The largest usual group size (128 … 8) that divides <paramref name="k"/>, or 0.</summary>
    public static int LargestDividingGroup(long k)
    {
        foreach (int g in new[] { 128, 64, 32, 16, 8 }) if (k % g == 0) return g;
        return 0;
    }
}
