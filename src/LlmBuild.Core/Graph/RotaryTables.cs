using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Models;

namespace LlmBuild.Core.Graph;

/// <summary>
/// RoPE cos/sin tables [SeqLength, 1, head_dim] in the rotate_half layout (the frequencies repeated over both halves),
/// with rope_scaling applied as Hugging Face does (linear: positions divided by the factor; llama3: per-frequency
/// smoothing between the low- and high-frequency wavelengths; longrope: per-frequency divisors, the short list below
/// original_max_position_embeddings and the long one from there on, cos/sin times the attention factor). Partial or
/// interleaved RoPE uses the build's head layout (<see cref="RotaryLayout"/>): cos 1 and sin 0 on the dimensions RoPE
/// leaves alone. Blocks gather rows by position_ids.
/// </summary>
public static class RotaryTables
{
    /// <summary>The inverse frequencies θ^(−2i/d), i &lt; d/2, after rope_scaling, in double precision.</summary>
    public static double[] InverseFrequencies(ModelConfig config, bool longFactors = false)
    {
        int d = config.RotatedDims;
        if (d % 2 != 0)
            throw new LlmBuildException(ErrorCodes.GraphBadShape, $"head_dim {d} is odd; RoPE needs an even head dimension.");
        var inv = new double[d / 2];
        for (int i = 0; i < inv.Length; i++)
            inv[i] = 1.0 / Math.Pow(config.RopeTheta, 2.0 * i / d);
        RopeScaling? s = config.RopeScaling;
        if (s is null) return inv;
        switch (s.Type)
        {
            case "linear":
                for (int i = 0; i < inv.Length; i++) inv[i] /= s.Factor;
                break;
            case "llama3":
                double lowWavelen = s.OriginalMaxPositionEmbeddings / s.LowFreqFactor;
                double highWavelen = s.OriginalMaxPositionEmbeddings / s.HighFreqFactor;
                for (int i = 0; i < inv.Length; i++)
                {
                    double wavelen = 2 * Math.PI / inv[i];
                    if (wavelen > lowWavelen) inv[i] /= s.Factor;
                    else if (wavelen >= highWavelen)
                    {
                        double smooth = (s.OriginalMaxPositionEmbeddings / wavelen - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor);
                        inv[i] = (1 - smooth) * inv[i] / s.Factor + smooth * inv[i];
                    }
                }
                break;
            case "longrope":
                var factors = (longFactors ? s.LongFactor : s.ShortFactor)!;
                for (int i = 0; i < inv.Length; i++) inv[i] /= factors[i];
                break;
            default:
                throw new LlmBuildException(ErrorCodes.GraphUnsupported, $"rope_scaling type '{s.Type}' is not supported (linear, llama3, longrope).");
        }
        return inv;
    }

    /// <summary>The config a sliding-window layer computes RoPE with when the family gives it its own base: that base, no scaling.</summary>
    public static ModelConfig LocalConfig(ModelConfig config) =>
        config with { RopeTheta = config.LocalRopeTheta ?? config.RopeTheta, RopeScaling = config.LocalRopeTheta is null ? config.RopeScaling : null };

    /// <summary>
    /// cos and sin tables, row-major [rows, 1, head_dim]: new arrays the caller owns. Every piece graph of a build asks for
    /// the same tables (each block, in resolve, quantize and export), so one process computes each table once and hands
    /// out copies: the cache is keyed by everything the values depend on (the inverse frequencies after rope_scaling,
    /// the long ones and where they start, the attention factor, head_dim, the rotated dims and the rows).
    /// </summary>
    public static (float[] Cos, float[] Sin) Compute(ModelConfig config, int rows)
    {
        double[] shortInv = InverseFrequencies(config);
        RopeScaling? scaling = config.RopeScaling;
        bool longRope = scaling?.Type == "longrope";
        double[] longInv = longRope ? InverseFrequencies(config, longFactors: true) : shortInv;
        float attention = longRope ? (float)scaling!.AttentionFactor : 1f;
        int d = config.HeadDim, pairs = config.RotatedDims / 2, longFrom = longRope ? scaling!.OriginalMaxPositionEmbeddings : int.MaxValue;
        var key = new System.Text.StringBuilder().Append(rows).Append('|').Append(d).Append('|').Append(pairs).Append('|')
            .Append(BitConverter.SingleToInt32Bits(attention)).Append('|').Append(longFrom);
        foreach (double f in shortInv.Concat(longInv)) key.Append('|').Append(BitConverter.DoubleToInt64Bits(f));
        if (TableCache.Count > 64) TableCache.Clear();
        var (cos, sin) = TableCache.GetOrAdd(key.ToString(), _ => new Lazy<(float[], float[])>(() => ComputeUncached(shortInv, longInv, longFrom, attention, d, pairs, rows))).Value;
        return ((float[])cos.Clone(), (float[])sin.Clone());
    }

    private static readonly System.Collections.Concurrent.ConcurrentDictionary<string, Lazy<(float[] Cos, float[] Sin)>> TableCache = new(StringComparer.Ordinal);

    private static (float[] Cos, float[] Sin) ComputeUncached(double[] shortInv, double[] longInv, int longFrom, float attention, int d, int pairs, int rows)
    {
        int half = d / 2;
        // Resolve refuses a SeqLength whose KV cache cannot fit device memory long before this; a caller that skips
        // resolve still gets a coded error rather than an overflow.
        if (rows < 0 || (long)rows * d > Array.MaxLength)
            throw new LlmBuildException(ErrorCodes.GraphBadShape,
                $"RoPE tables of {rows} positions × head_dim {d} exceed the largest array ({Array.MaxLength} elements). Lower SeqLength.");
        var cos = new float[(long)rows * d];
        var sin = new float[(long)rows * d];
        for (int p = 0; p < rows; p++)
        {
            // longrope: positions past the original context use the long factors (as the cache of both lists does).
            double[] inv = p >= longFrom ? longInv : shortInv;
            for (int i = 0; i < half; i++)
            {
                float c = 1f, s = 0f;
                if (i < pairs)
                {
                    // Hugging Face forms the angle in f32 (position × inv_freq); do the same so long sequences agree.
                    float angle = (float)p * (float)inv[i];
                    c = (float)Math.Cos(angle) * attention;
                    s = (float)Math.Sin(angle) * attention;
                }
                cos[p * d + i] = c;
                cos[p * d + i + half] = c;
                sin[p * d + i] = s;
                sin[p * d + i + half] = s;
            }
        }
        return (cos, sin);
    }
}
