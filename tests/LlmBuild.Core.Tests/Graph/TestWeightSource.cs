using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Graph;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Quantization;

namespace LlmBuild.Core.Tests.Graph;

/// <summary>
/// Serves a resolved model's owner weights straight from the checkpoint, as the quantize stage would store them:
/// activation-dtype entries rounded to bf16/f16, quantized entries through the weights stage's LinearQuantizer.
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
        var q = LinearQuantizer.Quantize(w, n, k, scheme);
        return (q.QWeight, q.Scales, q.QZeros);
    }
}
