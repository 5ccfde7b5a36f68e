using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Models;

namespace LlmBuild.Core.Graph;

/// <summary>
/// RoPE cos/sin tables [SeqLength, 1, head_dim] in the rotate_half layout (the frequencies repeated over both halves),
/// with rope_scaling applied as Hugging Face does (linear: positions divided by the factor; llama3: per-frequency
/// smoothing between the low- and high-frequency wavelengths). Blocks gather rows by position_ids.
/// </summary>
public static class RotaryTables
{
    /// <summary>The inverse frequencies θ^(−2i/d), i &lt; d/2, after rope_scaling, in double precision.</summary>
    public static double[] InverseFrequencies(ModelConfig config)
    {
        int d = config.HeadDim;
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
            default:
                throw new LlmBuildException(ErrorCodes.GraphUnsupported, $"rope_scaling type '{s.Type}' is not supported (linear, llama3).");
        }
        return inv;
    }

    /// <summary>cos and sin tables, row-major [rows, 1, head_dim].</summary>
    public static (float[] Cos, float[] Sin) Compute(ModelConfig config, int rows)
    {
        double[] inv = InverseFrequencies(config);
        int d = config.HeadDim, half = d / 2;
        // Resolve refuses a SeqLength whose KV cache cannot fit device memory long before this; a caller that skips
        // resolve still gets a coded error rather than an overflow.
        if (rows < 0 || (long)rows * d > Array.MaxLength)
            throw new LlmBuildException(ErrorCodes.GraphBadShape,
                $"RoPE tables of {rows} positions × head_dim {d} exceed the largest array ({Array.MaxLength} elements). Lower SeqLength.");
        var cos = new float[(long)rows * d];
        var sin = new float[(long)rows * d];
        for (int p = 0; p < rows; p++)
        {
            for (int i = 0; i < half; i++)
            {
                // Hugging Face forms the angle in f32 (position × inv_freq); do the same so long sequences agree.
                float angle = (float)p * (float)inv[i];
                float c = (float)Math.Cos(angle), s = (float)Math.Sin(angle);
                cos[p * d + i] = c;
                cos[p * d + i + half] = c;
                sin[p * d + i] = s;
                sin[p * d + i + half] = s;
            }
        }
        return (cos, sin);
    }
}
