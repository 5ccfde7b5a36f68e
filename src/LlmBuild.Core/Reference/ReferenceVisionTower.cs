using System.Numerics.Tensors;
using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Models;

namespace LlmBuild.Core.Reference;

/// <summary>
/// An f32 forward of a Qwen2-VL / Qwen2.5-VL vision tower straight from the checkpoint, as plain loops over Hugging
/// Face's math: the patch embedding (Conv3d with stride = kernel, i.e. a linear over flattened patches), 2-D rotary
/// positions (height, width) in the processor's 2×2-merge order, blocks of norm → fused-qkv attention within each
/// frame (Qwen2.5-VL: within windows, except its full-attention blocks, after reordering the patches window by window)
/// → norm → MLP, then the merger (norm, merge² patches concatenated, Linear → GELU → Linear), back in raster order.
/// It shares no code with the graph layer: the oracle for the <c>vit</c> piece.
/// </summary>
public sealed class ReferenceVisionTower
{
    private readonly ICheckpoint _checkpoint;
    private readonly VisionTowerDeclaration _tower;
    private readonly VisionConfig _v;
    private readonly Dictionary<string, float[]> _weights = new(StringComparer.Ordinal);

    public ReferenceVisionTower(ICheckpoint checkpoint, ModelConfig config)
    {
        _checkpoint = FamilyCheckpoint.ForReference(checkpoint, config);
        _tower = ModelFamilies.Get(config.ModelType).Vision
            ?? throw new LlmBuildException(ErrorCodes.ReferenceUnsupported, $"model_type '{config.ModelType}' has no vision tower.");
        _v = config.Vision!;
    }

    /// <summary>
    /// Encodes the patches of the given images ([Σ t·h·w, C·T·P·P] in the processor's order) and returns the merged
    /// embeddings [Σ t·h·w / merge², out_hidden].
    /// </summary>
    public float[] Encode(float[] pixelValues, IReadOnlyList<(int T, int H, int W)> grids)
    {
        var v = _v;
        int e = v.EmbedDim, heads = v.NumHeads, hd = v.HeadDim, m = v.SpatialMergeSize, unit = v.MergeArea;
        int n = grids.Sum(g => g.T * g.H * g.W);
        if (pixelValues.Length != (long)n * v.PatchDim)
            throw new LlmBuildException(ErrorCodes.ImagePromptMismatch, $"{pixelValues.Length} pixel values do not make the {n} patches of [{v.PatchDim}] the image grids imply.");
        float[] x = Linear(pixelValues, n, v.PatchDim, W(VisionRole.PatchEmbed), e, null);

        // Rotary angles per patch: height positions on the first hd/4 frequencies, width on the next.
        int quarter = hd / 4;
        var inv = new float[quarter];
        for (int j = 0; j < quarter; j++) inv[j] = 1f / MathF.Pow(10000f, 2f * j / (hd / 2));
        var pos = new List<(int H, int W)>();
        foreach (var (t, h, w) in grids)
            for (int f = 0; f < t; f++)
                for (int bh = 0; bh < h / m; bh++)
                    for (int bw = 0; bw < w / m; bw++)
                        for (int i = 0; i < m; i++)
                            for (int j = 0; j < m; j++) pos.Add((bh * m + i, bw * m + j));

        // Attention segments: each frame (full attention) and, with windows, each window of each frame.
        List<(int Start, int Count)> frames = [], windows = [];
        int[] order = Enumerable.Range(0, n / unit).ToArray();
        int at = 0;
        foreach (var (t, h, w) in grids)
            for (int f = 0; f < t; f++) { frames.Add((at, h * w)); at += h * w; }
        if (v.UsesWindows)
        {
            (order, windows) = WindowOrder(grids);
            x = Permute(x, order, unit * e);
            pos = order.SelectMany(g => pos.GetRange(g * unit, unit)).ToList();
        }

        for (int block = 0; block < v.Depth; block++)
        {
            var segments = v.IsFullAttention(block) ? frames : windows;
            float[] a = Norm(x, n, W(VisionRole.Norm1, block), B(VisionRole.Norm1Bias, block));
            float[] qkv = Linear(a, n, e, W(VisionRole.Qkv, block), 3 * e, B(VisionRole.QkvBias, block));
            var q = new float[n * e];
            var k = new float[n * e];
            var val = new float[n * e];
            for (int r = 0; r < n; r++)
            {
                qkv.AsSpan(r * 3 * e, e).CopyTo(q.AsSpan(r * e));
                qkv.AsSpan(r * 3 * e + e, e).CopyTo(k.AsSpan(r * e));
                qkv.AsSpan(r * 3 * e + 2 * e, e).CopyTo(val.AsSpan(r * e));
                for (int hh = 0; hh < heads; hh++)
                {
                    Rope(q.AsSpan(r * e + hh * hd, hd), pos[r], inv);
                    Rope(k.AsSpan(r * e + hh * hd, hd), pos[r], inv);
                }
            }
            float[] attn = Attention(q, k, val, n, heads, hd, segments);
            float[] proj = Linear(attn, n, e, W(VisionRole.Proj, block), e, B(VisionRole.ProjBias, block));
            TensorPrimitives.Add(x, proj, x);

            float[] b = Norm(x, n, W(VisionRole.Norm2, block), B(VisionRole.Norm2Bias, block));
            float[] mlp;
            if (_tower.GatedMlp)
            {
                float[] gate = Linear(b, n, e, W(VisionRole.Gate, block), v.IntermediateSize, B(VisionRole.GateBias, block));
                float[] up = Linear(b, n, e, W(VisionRole.Up, block), v.IntermediateSize, B(VisionRole.UpBias, block));
                for (int i = 0; i < gate.Length; i++) gate[i] = Activation(gate[i]) * up[i];
                mlp = Linear(gate, n, v.IntermediateSize, W(VisionRole.Down, block), e, B(VisionRole.DownBias, block));
            }
            else
            {
                float[] hidden = Linear(b, n, e, W(VisionRole.Fc1, block), v.IntermediateSize, B(VisionRole.Fc1Bias, block));
                for (int i = 0; i < hidden.Length; i++) hidden[i] = Activation(hidden[i]);
                mlp = Linear(hidden, n, v.IntermediateSize, W(VisionRole.Fc2, block), e, B(VisionRole.Fc2Bias, block));
            }
            TensorPrimitives.Add(x, mlp, x);
        }

        float[] merged = Norm(x, n, W(VisionRole.MergerNorm), B(VisionRole.MergerNormBias));
        int tokens = n / unit, width = e * unit;
        float[] h0 = Linear(merged, tokens, width, W(VisionRole.Merger0), width, B(VisionRole.Merger0Bias));
        for (int i = 0; i < h0.Length; i++) h0[i] = 0.5f * h0[i] * (1f + Erf(h0[i] / MathF.Sqrt(2f)));
        float[] output = Linear(h0, tokens, width, W(VisionRole.Merger2), v.OutHiddenSize, B(VisionRole.Merger2Bias));
        if (!v.UsesWindows) return output;
        // Back in raster order: merged token order[i] is row i.
        var back = new float[output.Length];
        for (int i = 0; i < tokens; i++) output.AsSpan(i * v.OutHiddenSize, v.OutHiddenSize).CopyTo(back.AsSpan(order[i] * v.OutHiddenSize));
        return back;
    }

    /// <summary>
    /// Qwen2.5-VL's window order: per frame, the merged tokens window by window (windows of window_size / (merge·patch)
    /// merged tokens a side, the last row/column of windows cut short), each window's tokens in raster order; returns
    /// the merged-token order and the attention segments (in patches) of the windows.
    /// </summary>
    public (int[] Order, List<(int Start, int Count)> Windows) WindowOrder(IReadOnlyList<(int T, int H, int W)> grids)
    {
        int m = _v.SpatialMergeSize, side = _v.WindowSize / m / _v.PatchSize, unit = _v.MergeArea;
        var order = new List<int>();
        var windows = new List<(int, int)>();
        int baseIndex = 0, at = 0;
        foreach (var (t, h, w) in grids)
        {
            int lh = h / m, lw = w / m;
            for (int f = 0; f < t; f++)
            {
                for (int wy = 0; wy < lh; wy += side)
                    for (int wx = 0; wx < lw; wx += side)
                    {
                        int count = 0;
                        for (int y = wy; y < Math.Min(wy + side, lh); y++)
                            for (int x = wx; x < Math.Min(wx + side, lw); x++) { order.Add(baseIndex + f * lh * lw + y * lw + x); count++; }
                        windows.Add((at, count * unit));
                        at += count * unit;
                    }
            }
            baseIndex += t * lh * lw;
        }
        return (order.ToArray(), windows);
    }

    private float Activation(float x) => _v.HiddenAct switch
    {
        "quick_gelu" => x / (1f + MathF.Exp(-1.702f * x)),
        "silu" => x / (1f + MathF.Exp(-x)),
        _ => 0.5f * x * (1f + MathF.Tanh(MathF.Sqrt(2f / MathF.PI) * (x + 0.044715f * x * x * x))),
    };

    /// <summary>erf to float precision (Abramowitz–Stegun 7.1.26 is too coarse; this is a series / continued fraction in double).</summary>
    internal static float Erf(float x)
    {
        double z = Math.Abs(x), result;
        if (z < 2.5)
        {
            // Maclaurin series.
            double sum = z, term = z, z2 = z * z;
            for (int k = 1; k < 60; k++)
            {
                term *= -z2 / k;
                double add = term / (2 * k + 1);
                sum += add;
                if (Math.Abs(add) < 1e-17) break;
            }
            result = 2 / Math.Sqrt(Math.PI) * sum;
        }
        else
        {
            // Continued fraction for erfc.
            double f = 0;
            for (int k = 60; k >= 1; k--) f = k / 2.0 / (z + f);
            result = 1 - Math.Exp(-z * z) / Math.Sqrt(Math.PI) / (z + f);
        }
        return (float)(x < 0 ? -result : result);
    }

    private static void Rope(Span<float> x, (int H, int W) pos, float[] inv)
    {
        int half = x.Length / 2, quarter = inv.Length;
        for (int i = 0; i < half; i++)
        {
            float angle = (i < quarter ? pos.H : pos.W) * inv[i % quarter];
            float c = MathF.Cos(angle), s = MathF.Sin(angle);
            float a = x[i], b = x[i + half];
            x[i] = a * c - b * s;
            x[i + half] = b * c + a * s;
        }
    }

    private static float[] Attention(float[] q, float[] k, float[] v, int n, int heads, int hd, List<(int Start, int Count)> segments)
    {
        int e = heads * hd;
        var output = new float[n * e];
        float scale = 1f / MathF.Sqrt(hd);
        Parallel.ForEach(segments, segment =>
        {
            var scores = new float[segment.Count];
            for (int r = segment.Start; r < segment.Start + segment.Count; r++)
                for (int h = 0; h < heads; h++)
                {
                    var qv = q.AsSpan(r * e + h * hd, hd);
                    float max = float.NegativeInfinity;
                    for (int j = 0; j < segment.Count; j++)
                    {
                        scores[j] = TensorPrimitives.Dot(qv, k.AsSpan((segment.Start + j) * e + h * hd, hd)) * scale;
                        max = MathF.Max(max, scores[j]);
                    }
                    float sum = 0;
                    for (int j = 0; j < segment.Count; j++) { scores[j] = MathF.Exp(scores[j] - max); sum += scores[j]; }
                    var o = output.AsSpan(r * e + h * hd, hd);
                    for (int j = 0; j < segment.Count; j++)
                    {
                        float p = scores[j] / sum;
                        var vv = v.AsSpan((segment.Start + j) * e + h * hd, hd);
                        for (int i = 0; i < hd; i++) o[i] += p * vv[i];
                    }
                }
        });
        return output;
    }

    /// <summary>LayerNorm (with bias) or RMSNorm over each row of embed_dim, eps 1e-6.</summary>
    private float[] Norm(float[] x, int rows, float[] weight, float[]? bias)
    {
        int width = weight.Length;
        var y = new float[x.Length];
        float eps = (float)_tower.NormEps;
        for (int r = 0; r < rows; r++)
        {
            var row = x.AsSpan(r * width, width);
            var o = y.AsSpan(r * width, width);
            if (_tower.Norm == VisionNorm.LayerNorm)
            {
                float mean = TensorPrimitives.Sum(row) / width, variance = 0;
                for (int i = 0; i < width; i++) variance += (row[i] - mean) * (row[i] - mean);
                float inv = 1f / MathF.Sqrt(variance / width + eps);
                for (int i = 0; i < width; i++) o[i] = (row[i] - mean) * inv * weight[i] + (bias?[i] ?? 0f);
            }
            else
            {
                float inv = 1f / MathF.Sqrt(TensorPrimitives.Dot(row, row) / width + eps);
                for (int i = 0; i < width; i++) o[i] = weight[i] * (row[i] * inv);
            }
        }
        return y;
    }

    private static float[] Permute(float[] x, int[] order, int rowWidth)
    {
        var y = new float[x.Length];
        for (int i = 0; i < order.Length; i++) x.AsSpan(order[i] * rowWidth, rowWidth).CopyTo(y.AsSpan(i * rowWidth));
        return y;
    }

    private static float[] Linear(float[] x, int rows, int inFeatures, float[] w, int outFeatures, float[]? bias)
    {
        var y = new float[(long)rows * outFeatures];
        Parallel.For(0, rows, r =>
        {
            var xr = x.AsSpan(r * inFeatures, inFeatures);
            for (int o = 0; o < outFeatures; o++)
                y[(long)r * outFeatures + o] = TensorPrimitives.Dot(xr, w.AsSpan(o * inFeatures, inFeatures)) + (bias?[o] ?? 0f);
        });
        return y;
    }

    private float[] W(VisionRole role, int block = 0) => Read(_tower.TensorName(role, block));
    private float[]? B(VisionRole role, int block = 0) => _tower.Has(role) ? Read(_tower.TensorName(role, block)) : null;

    private float[] Read(string name)
    {
        lock (_weights)
        {
            if (_weights.TryGetValue(name, out float[]? cached)) return cached;
            if (!_checkpoint.Contains(name))
                throw new LlmBuildException(ErrorCodes.ReferenceUnsupported, $"The checkpoint has no tensor '{name}', which the vision tower needs.");
            var data = new float[_checkpoint.GetInfo(name).ElementCount];
            _checkpoint.ReadFloat32(name, data);
            _weights[name] = data;
            return data;
        }
    }
}
