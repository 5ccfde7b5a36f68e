using System.Globalization;
using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Models;
using LlmBuild.Core.Plan;

namespace LlmBuild.Core.Reference;

/// <summary>
/// A checkpoint whose linear weights read back quantized and dequantized (DESIGN §5's formula with 0 inside every group's range, in f32,
/// written here independently of LinearQuantizer): the f32 model a quantized build is meant to compute. Every tensor a resolved model stores
/// quantized is replaced — a fused tensor as a whole, row by row, since groups run along each row — the rest pass through.
/// Verify runs the reference forward over it to tell the build's own error (against this model) from the quantization's
/// (this model against the unquantized one). Reads quantize only the groups they touch; nothing is cached.
/// </summary>
public sealed class FakeQuantCheckpoint : ICheckpoint
{
    private readonly ICheckpoint _inner;
    /// <summary>Each quantized source tensor's scheme: an entry's own width (mixed precision, an 8-bit lm_head) or the model's.</summary>
    private readonly Dictionary<string, QuantScheme> _quantized;

    public FakeQuantCheckpoint(ICheckpoint inner, ResolvedModel model)
    {
        _inner = inner;
        ModelFamily family = model.ModelFamily;
        var fusedViews = new Dictionary<string, string>(StringComparer.Ordinal);
        for (int layer = 0; layer < model.Config.NumLayers; layer++)
            foreach (FusedWeight f in family.FusedWeights)
            {
                string raw = string.Format(CultureInfo.InvariantCulture, f.Pattern, layer);
                foreach (WeightRole role in f.Parts) fusedViews[ModelFamily.FusedPartName(raw, role)] = raw;
            }
        _quantized = new Dictionary<string, QuantScheme>(StringComparer.Ordinal);
        foreach (WeightEntry e in model.Owners.SelectMany(o => o.Entries).Where(e => e.Storage == WeightStorage.Quantized))
            _quantized[fusedViews.GetValueOrDefault(e.SourceTensor, e.SourceTensor)] = model.SchemeOf(e);
    }

    public int QuantizedTensors => _quantized.Count;

    public string Directory => _inner.Directory;
    public IReadOnlyList<string> TensorNames => _inner.TensorNames;
    public IReadOnlyList<string> Files => _inner.Files;
    public bool Contains(string name) => _inner.Contains(name);
    public TensorInfo GetInfo(string name) => _inner.GetInfo(name);
    public void ReadRaw(string name, long byteOffset, Span<byte> destination) => _inner.ReadRaw(name, byteOffset, destination);
    public void Dispose() => _inner.Dispose();

    public void ReadFloat32(string name, long elementOffset, Span<float> destination)
    {
        if (!_quantized.TryGetValue(name, out QuantScheme? scheme))
        {
            _inner.ReadFloat32(name, elementOffset, destination);
            return;
        }
        TensorInfo info = _inner.GetInfo(name);
        int k = (int)info.Shape[^1], g = scheme.GroupSize == 0 || scheme.GroupSize > k ? k : scheme.GroupSize;
        long start = elementOffset / g * g, end = (elementOffset + destination.Length + g - 1) / g * g;
        var w = new float[end - start];
        _inner.ReadFloat32(name, start, w);
        QuantizeDequantize(w, g, scheme);
        w.AsSpan((int)(elementOffset - start), destination.Length).CopyTo(destination);
    }

    /// <summary>Quantizes and dequantizes <paramref name="w"/> in place, group by group (its length is a multiple of <paramref name="g"/>).</summary>
    private static void QuantizeDequantize(float[] w, int g, QuantScheme scheme)
    {
        int qmax = (1 << scheme.Bits) - 1;
        for (int start = 0; start < w.Length; start += g)
        {
            var group = w.AsSpan(start, g);
            // In f32 as the stored scales are; the range always includes 0 (so 0 stays exact).
            float scale, zero;
            if (scheme.Symmetric)
            {
                float absMax = 0;
                foreach (float x in group) absMax = Math.Max(absMax, Math.Abs(x));
                scale = 2 * absMax / qmax;
                zero = 1 << (scheme.Bits - 1);
            }
            else
            {
                float lo = 0, hi = 0;
                foreach (float x in group) { lo = Math.Min(lo, x); hi = Math.Max(hi, x); }
                scale = (hi - lo) / qmax;
                zero = scale == 0 ? 0 : Math.Clamp(MathF.Round(-lo / scale), 0, qmax);
            }
            if (scale == 0) continue;
            for (int i = 0; i < g; i++)
                group[i] = (Math.Clamp(MathF.Round(group[i] / scale) + zero, 0, qmax) - zero) * scale;
        }
    }
}
