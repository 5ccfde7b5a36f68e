using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Graph;
using LlmBuild.Core.Pipeline;

namespace LlmBuild.Core.Tests.Graph;

/// <summary>
/// Serves a resolved model's owner weights straight from the checkpoint, as the quantize stage would store them:
/// activation-dtype entries rounded to bf16/f16, quantized entries through a scalar test quantizer written from
/// DESIGN §5 (asymmetric: scale = (max−min)/(2^b−1), zp = clamp(round(−min/scale)); symmetric: scale = 2·absmax/(2^b−1),
/// zp = 2^(b−1); q = clamp(round(w/scale) + zp); 4-bit codes two per byte, even element low).
/// </summary>
internal sealed class TestWeightSource : IWeightSource
{
    private readonly ResolvedModel _model;
    private readonly ICheckpoint _checkpoint;
    private readonly Dictionary<string, (WeightEntry Entry, WeightPart Part)> _keys = new(StringComparer.Ordinal);
    private readonly Dictionary<string, object> _cache = new(StringComparer.Ordinal);

    public TestWeightSource(ResolvedModel model, ICheckpoint checkpoint)
    {
        _model = model;
        _checkpoint = checkpoint;
        foreach (WeightEntry e in model.Owners.SelectMany(o => o.Entries))
        {
            if (e.Storage == WeightStorage.Quantized)
            {
                _keys[WeightKeys.QWeight(e.Key)] = (e, WeightPart.QWeight);
                _keys[WeightKeys.Scales(e.Key)] = (e, WeightPart.Scales);
                _keys[WeightKeys.QZeros(e.Key)] = (e, WeightPart.QZeros);
            }
            else _keys[e.Key] = (e, WeightPart.Value);
        }
    }

    public int Reads { get; private set; }

    public float[] ReadFloat(string key)
    {
        lock (_cache)
        {
            Reads++;
            var (entry, part) = _keys[key];
            if (part == WeightPart.Scales) return Quantized(entry).Scales;
            if (part != WeightPart.Value) throw new InvalidOperationException(key + " is not a float weight");
            if (_cache.TryGetValue(key, out object? c)) return (float[])c;
            float[] data = Source(entry);
            if (entry.Storage == WeightStorage.Activation)
                for (int i = 0; i < data.Length; i++) data[i] = Round(data[i]);
            _cache[key] = data;
            return data;
        }
    }

    public byte[] ReadBytes(string key)
    {
        lock (_cache)
        {
            Reads++;
            var (entry, part) = _keys[key];
            var q = Quantized(entry);
            return part == WeightPart.QWeight ? q.Codes : part == WeightPart.QZeros ? q.Zeros : throw new InvalidOperationException(key);
        }
    }

    private float Round(float x) => _model.ActivationDtype == "bf16" ? ToBf16(x) : (float)(Half)x;

    internal static float ToBf16(float x)
    {
        uint bits = BitConverter.SingleToUInt32Bits(x);
        bits += 0x7FFF + ((bits >> 16) & 1); // round to nearest even
        return BitConverter.UInt32BitsToSingle(bits & 0xFFFF0000);
    }

    private float[] Source(WeightEntry e)
    {
        var data = new float[_checkpoint.GetInfo(e.SourceTensor).ElementCount];
        _checkpoint.ReadFloat32(e.SourceTensor, data);
        return data;
    }

    private (byte[] Codes, float[] Scales, byte[] Zeros) Quantized(WeightEntry e)
    {
        if (_cache.TryGetValue("q:" + e.Key, out object? c)) return ((byte[], float[], byte[]))c;
        var result = Quantize(Source(e), (int)e.Shape[0], (int)e.Shape[1], _model.Weights);
        _cache["q:" + e.Key] = result;
        return result;
    }

    internal static (byte[] Codes, float[] Scales, byte[] Zeros) Quantize(float[] w, int n, int k, QuantScheme scheme)
    {
        int bits = scheme.Bits, g = scheme.GroupSize > 0 ? scheme.GroupSize : k, groups = k / g, max = (1 << bits) - 1;
        var codes = new byte[bits == 4 ? n * k / 2 : n * k];
        var scales = new float[n * groups];
        var zeros = new byte[n * groups];
        for (int row = 0; row < n; row++)
            for (int gi = 0; gi < groups; gi++)
            {
                var span = w.AsSpan(row * k + gi * g, g);
                float lo = float.MaxValue, hi = float.MinValue, absmax = 0;
                foreach (float x in span) { lo = Math.Min(lo, x); hi = Math.Max(hi, x); absmax = Math.Max(absmax, Math.Abs(x)); }
                float scale; int zp;
                if (scheme.Symmetric) { scale = 2 * absmax / max; zp = 1 << (bits - 1); }
                else { scale = (hi - lo) / max; zp = scale == 0 ? 0 : Math.Clamp((int)MathF.Round(-lo / scale, MidpointRounding.ToEven), 0, max); }
                if (scale == 0) scale = 1e-8f;
                scales[row * groups + gi] = scale;
                zeros[row * groups + gi] = (byte)zp;
                for (int i = 0; i < g; i++)
                {
                    int col = gi * g + i;
                    int q = Math.Clamp((int)MathF.Round(span[i] / scale, MidpointRounding.ToEven) + zp, 0, max);
                    if (bits == 8) codes[row * k + col] = (byte)q;
                    else codes[(row * k + col) / 2] |= (byte)(col % 2 == 0 ? q : q << 4);
                }
            }
        return (codes, scales, zeros);
    }
}
