using System.Numerics.Tensors;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.IO;
using LlmBuild.Core.Numerics;
using LlmBuild.Core.Numpy;
using LlmBuild.Core.Reference;

namespace LlmBuild.Core.Calibration;

/// <summary>
/// What calibration keeps of one layer's linear inputs, per input group (<see cref="LinearInput"/>): the Hessian
/// H = Σ x xᵀ [K, K] over every calibration token and the per-channel mean |x| [K]. GPTQ, the AWQ scale search and the
/// error report need nothing else, so a different group size, method or act-order reuses them.
/// Stored as layer_&lt;i&gt;.npz (f32: "&lt;group&gt;.hessian", "&lt;group&gt;.mean_abs", and "tokens").
/// </summary>
public sealed class LayerStatistics
{
    public sealed record Group(int K, double[] Hessian, float[] MeanAbs);

    public LayerStatistics(int layer, long tokens, IReadOnlyDictionary<LinearInput, Group> groups)
    {
        Layer = layer;
        Tokens = tokens;
        Groups = groups;
    }

    public int Layer { get; }
    public long Tokens { get; }
    public IReadOnlyDictionary<LinearInput, Group> Groups { get; }

    public static string FileName(int layer) => $"layer_{layer}.npz";

    private static string Key(LinearInput input) => input switch
    {
        LinearInput.Attention => "attention",
        LinearInput.AttentionOutput => "attention_output",
        LinearInput.Mlp => "mlp",
        LinearInput.MlpDown => "mlp_down",
        _ => throw new ArgumentOutOfRangeException(nameof(input)),
    };

    public void Write(string path) => AtomicFile.Write(path, stream =>
    {
        using var npz = new NpzWriter(stream, leaveOpen: true);
        npz.AddInt32("tokens", [checked((int)Tokens)], [1]);
        foreach (var (input, group) in Groups.OrderBy(g => g.Key))
        {
            var h = new float[group.Hessian.Length];
            for (int i = 0; i < h.Length; i++) h[i] = (float)group.Hessian[i];
            npz.AddFloat32(Key(input) + ".hessian", h, [group.K, group.K]);
            npz.AddFloat32(Key(input) + ".mean_abs", group.MeanAbs, [group.K]);
        }
        npz.Finish();
    });

    /// <summary>Reads a layer file; null (with a warning) when it is damaged, so the caller computes it again.</summary>
    public static LayerStatistics? TryRead(string path, int layer, ICollection<LlmBuildWarning> warnings)
    {
        if (!File.Exists(path)) return null;
        try
        {
            using var npz = new NpzReader(path);
            var groups = new Dictionary<LinearInput, Group>();
            foreach (LinearInput input in Enum.GetValues<LinearInput>())
            {
                if (!npz.Contains(Key(input) + ".hessian")) continue;
                float[] h = npz.ReadFloat32(Key(input) + ".hessian");
                float[] mean = npz.ReadFloat32(Key(input) + ".mean_abs");
                if ((long)mean.Length * mean.Length != h.Length) throw new InvalidDataException("Hessian and mean |x| disagree in size.");
                groups[input] = new Group(mean.Length, h.Select(v => (double)v).ToArray(), mean);
            }
            int tokens = BitConverter.ToInt32(npz.ReadBytes("tokens").AsSpan(^4));
            return new LayerStatistics(layer, tokens, groups);
        }
        catch (Exception e) when (e is LlmBuildException or IOException or InvalidDataException)
        {
            warnings.Add(new LlmBuildWarning(ErrorCodes.CalibrationCacheDiscarded,
                $"The calibration statistics '{path}' cannot be read ({e.Message}); they are computed again.", path));
            return null;
        }
    }

    /// <summary>
    /// Accumulates one layer's statistics from the inputs the reference forward shows: the rows of every calibration
    /// sequence are gathered per group (transposed, so H_ij is one dot product over all tokens), then reduced in parallel.
    /// </summary>
    public sealed class Collector
    {
        private readonly Dictionary<LinearInput, (int Width, List<float[]> Rows)> _inputs = [];
        private long _tokens;

        public void Observe(int layer, LinearInput input, float[] x, int rows, int width)
        {
            if (!_inputs.TryGetValue(input, out var entry)) _inputs[input] = entry = (width, []);
            entry.Rows.Add(x.AsSpan(0, rows * width).ToArray());
            if (input == LinearInput.Attention) _tokens += rows;
        }

        public LayerStatistics Finish(int layer)
        {
            var groups = new Dictionary<LinearInput, Group>();
            foreach (var (input, (k, chunks)) in _inputs)
            {
                int t = chunks.Sum(c => c.Length / k);
                // Xᵀ: channel-major, so each Hessian entry is one contiguous dot product.
                var xt = new float[(long)k * t];
                int offset = 0;
                foreach (float[] chunk in chunks)
                {
                    int rows = chunk.Length / k;
                    for (int r = 0; r < rows; r++)
                        for (int c = 0; c < k; c++) xt[(long)c * t + offset + r] = chunk[r * k + c];
                    offset += rows;
                }
                chunks.Clear();
                var h = new double[(long)k * k];
                var mean = new float[k];
                Parallelism.For(k, i =>
                {
                    ReadOnlySpan<float> xi = xt.AsSpan((int)((long)i * t), t);
                    mean[i] = (float)(TensorPrimitives.SumOfMagnitudes(xi) / t);
                    for (int j = i; j < k; j++)
                    {
                        double v = TensorPrimitives.Dot(xi, xt.AsSpan((int)((long)j * t), t));
                        h[(long)i * k + j] = v;
                        h[(long)j * k + i] = v;
                    }
                });
                groups[input] = new Group(k, h, mean);
            }
            return new LayerStatistics(layer, _tokens, groups);
        }
    }
}
