using System.Numerics.Tensors;
using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Models;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Quantization;
using LlmBuild.Core.Reference;

namespace LlmBuild.Core.Calibration;

/// <summary>One linear's line of the quantization report: its output error on the calibration data, RTN's and the method's.</summary>
public sealed record LinearReport(int Layer, string Role, string Tensor, int Bits, double RtnError, double Error, double? Alpha);

/// <summary>
/// Calibrated quantization of one decoder layer from its statistics (<see cref="LayerStatistics"/>):
/// <list type="bullet">
/// <item>gptq: every quantized linear of the layer by <see cref="Gptq"/> with its input group's Hessian.</item>
/// <item>awq: per-channel scales searched (<see cref="ActivationAwareScales"/>) for three input groups and folded so the
/// float model is unchanged: q/k/v share input_layernorm's output, so their columns are multiplied by s and the norm
/// weight divided by it ((offset + w)/s − offset for (1 + w) norms); gate/up likewise with post_attention_layernorm;
/// down_proj's columns by s and up_proj's rows (and bias) divided by it, since act(gate)·up is linear in up. o_proj is
/// not scaled: its input comes out of softmax-weighted values of grouped heads, with no per-channel factor to fold
/// into cheaply, so it is rounded to nearest. Then round-to-nearest.</item>
/// </list>
/// The output error of a linear on the calibration data, Σ |ΔW x|² = Σ_rows Δ H Δᵀ, is reported for RTN and the method.
/// </summary>
public static class CalibratedLayer
{
    private static readonly (WeightRole Role, LinearInput Input)[] Linears =
    [
        (WeightRole.QProj, LinearInput.Attention), (WeightRole.KProj, LinearInput.Attention), (WeightRole.VProj, LinearInput.Attention),
        (WeightRole.OProj, LinearInput.AttentionOutput),
        (WeightRole.MlpGate, LinearInput.Mlp), (WeightRole.MlpUp, LinearInput.Mlp), (WeightRole.MlpDown, LinearInput.MlpDown),
    ];

    /// <summary>The calibration input group a block linear reads (its Hessian); null for a role calibration does not observe.</summary>
    public static LinearInput? InputOf(WeightRole role) => Linears.Where(l => l.Role == role).Select(l => (LinearInput?)l.Input).FirstOrDefault();

    /// <summary>The overrides for the layer's entries among <paramref name="entries"/>, and the report lines.</summary>
    public static (WeightOverrides Overrides, List<LinearReport> Report) Quantize(ICheckpoint checkpoint, ResolvedModel model, IReadOnlyList<WeightEntry> entries,
        LayerStatistics stats, CalibrationSettings settings)
    {
        int layer = stats.Layer;
        var overrides = new WeightOverrides();
        var report = new List<LinearReport>();
        WeightEntry? Entry(WeightRole role) => entries.FirstOrDefault(e => e.Role == role && e.Layer == layer && e.Expert is null);
        float[] Read(WeightEntry e) => ReadFloats(checkpoint, e);
        var scaling = new AwqScaling();
        Dictionary<WeightRole, float[]> weights = settings.Method == CalibrationSettings.Awq
            ? ScaleForAwq(checkpoint, model, entries, stats, scaling, overrides.Floats)
            : LayerLinears(checkpoint, entries, layer);
        var alphas = scaling.Alphas;
        var columnScale = scaling.ColumnScale;
        var rowScale = scaling.RowScale;

        foreach (var (role, input) in Linears)
        {
            if (!weights.TryGetValue(role, out float[]? w) || !stats.Groups.TryGetValue(input, out var group)) continue;
            WeightEntry e = Entry(role)!;
            // The entry's width: a linear mixed precision keeps at 8 bits is rounded (and GPTQ-compensated) at 8 bits.
            QuantScheme scheme = model.SchemeOf(e);
            int n = checked((int)e.Shape[0]), k = checked((int)e.Shape[1]);
            QuantizedLinear q = settings.Method == CalibrationSettings.Gptq
                ? Gptq.Quantize(w, n, k, group.Hessian, scheme, settings.ActOrder, e.SourceTensor)
                : LinearQuantizer.Quantize(w, n, k, scheme, e.SourceTensor);
            overrides.Quantized[e.SourceTensor] = q;
            // Errors against the original float linear (the one the float model computes with its inputs).
            float[] original = Read(e);
            double rtn = OutputError(original, LinearQuantizer.DequantizeInSourceOrder(LinearQuantizer.Quantize(original, n, k, scheme, e.SourceTensor)), n, k, group.Hessian);
            float[] effective = LinearQuantizer.DequantizeInSourceOrder(q);
            // As the unscaled input sees it: columns divided by their factor, rows multiplied back.
            if (columnScale.TryGetValue(role, out float[]? cs))
                for (int r = 0; r < n; r++) TensorPrimitives.Divide(effective.AsSpan(r * k, k), cs, effective.AsSpan(r * k, k));
            if (rowScale.TryGetValue(role, out float[]? rs))
                for (int r = 0; r < n; r++) TensorPrimitives.Multiply(effective.AsSpan(r * k, k), rs[r], effective.AsSpan(r * k, k));
            double error = OutputError(original, effective, n, k, group.Hessian);
            report.Add(new LinearReport(layer, role.ToString(), e.SourceTensor, scheme.Bits, rtn, error, alphas.TryGetValue(role, out double a) ? a : null));
        }
        return (overrides, report);
    }

    /// <summary>AWQ's decisions for one layer: α and the column factor per scaled linear, the row factor of up_proj.</summary>
    private sealed class AwqScaling
    {
        public Dictionary<WeightRole, double> Alphas { get; } = [];
        public Dictionary<WeightRole, float[]> ColumnScale { get; } = [];
        public Dictionary<WeightRole, float[]> RowScale { get; } = [];
    }

    private static float[] ReadFloats(ICheckpoint checkpoint, WeightEntry e)
    {
        var data = new float[e.Shape.Aggregate(1L, (a, b) => a * b)];
        checkpoint.ReadFloat32(e.SourceTensor, data);
        return data;
    }

    /// <summary>The layer's quantized linears as f32 [N, K], by role.</summary>
    private static Dictionary<WeightRole, float[]> LayerLinears(ICheckpoint checkpoint, IReadOnlyList<WeightEntry> entries, int layer)
    {
        var weights = new Dictionary<WeightRole, float[]>();
        foreach (var (role, _) in Linears)
            if (entries.FirstOrDefault(e => e.Role == role && e.Layer == layer && e.Expert is null) is { Storage: WeightStorage.Quantized } e) weights[role] = ReadFloats(checkpoint, e);
        return weights;
    }

    /// <summary>
    /// The AWQ-folded float layer, unquantized: every tensor the fold changed (norm weights, scaled linears, up_proj's
    /// rows and bias), by source tensor name. The float model with these is the checkpoint's model (a test checks the logits).
    /// </summary>
    public static Dictionary<string, float[]> AwqFoldedFloats(ICheckpoint checkpoint, ResolvedModel model, IReadOnlyList<WeightEntry> entries, LayerStatistics stats)
    {
        var floats = new Dictionary<string, float[]>(StringComparer.Ordinal);
        var weights = ScaleForAwq(checkpoint, model, entries, stats, new AwqScaling(), floats);
        foreach (var (role, w) in weights) floats[entries.First(e => e.Role == role && e.Layer == stats.Layer && e.Expert is null).SourceTensor] = w;
        return floats;
    }

    /// <summary>Searches and applies AWQ's scales: returns the scaled linears by role; the folded norms and bias go to <paramref name="floats"/>.</summary>
    private static Dictionary<WeightRole, float[]> ScaleForAwq(ICheckpoint checkpoint, ResolvedModel model, IReadOnlyList<WeightEntry> entries, LayerStatistics stats,
        AwqScaling scaling, Dictionary<string, float[]> floats)
    {
        int layer = stats.Layer;
        WeightEntry? Entry(WeightRole role) => entries.FirstOrDefault(e => e.Role == role && e.Layer == layer && e.Expert is null);
        var weights = LayerLinears(checkpoint, entries, layer);
        QuantScheme scheme = model.Weights;
        float offset = (float)model.ModelFamily.NormWeightOffset;
        void ScaleGroup(LinearInput input, WeightRole[] roles, Action<float[]> fold)
        {
            if (!stats.Groups.TryGetValue(input, out var group) || roles.Any(r => !weights.ContainsKey(r))) return;
            var linears = roles.Select(r => (weights[r], checked((int)Entry(r)!.Shape[0]))).ToList();
            var result = ActivationAwareScales.Search(linears, group.K, group.MeanAbs, group.Hessian, scheme);
            foreach (var r in roles)
            {
                ScaleColumns(weights[r], group.K, result.Scales);
                scaling.Alphas[r] = result.Alpha;
                scaling.ColumnScale[r] = result.Scales;
            }
            fold(result.Scales);
        }
        void FoldIntoNorm(WeightRole normRole, float[] s)
        {
            WeightEntry norm = Entry(normRole)!;
            float[] w = floats.TryGetValue(norm.SourceTensor, out var done) ? done : ReadFloats(checkpoint, norm);
            for (int j = 0; j < s.Length; j++) w[j] = (offset + w[j]) / s[j] - offset;
            floats[norm.SourceTensor] = w;
        }
        ScaleGroup(LinearInput.Attention, [WeightRole.QProj, WeightRole.KProj, WeightRole.VProj], s => FoldIntoNorm(WeightRole.InputNorm, s));
        ScaleGroup(LinearInput.Mlp, [WeightRole.MlpGate, WeightRole.MlpUp], s => FoldIntoNorm(WeightRole.PostAttentionNorm, s));
        if (weights.ContainsKey(WeightRole.MlpUp))
            ScaleGroup(LinearInput.MlpDown, [WeightRole.MlpDown], s =>
            {
                float[] up = weights[WeightRole.MlpUp];
                int k = checked((int)Entry(WeightRole.MlpUp)!.Shape[1]);
                for (int r = 0; r < s.Length; r++) TensorPrimitives.Divide(up.AsSpan(r * k, k), s[r], up.AsSpan(r * k, k));
                scaling.RowScale[WeightRole.MlpUp] = s;
                if (Entry(WeightRole.MlpUpBias) is { } biasEntry)
                {
                    float[] bias = ReadFloats(checkpoint, biasEntry);
                    TensorPrimitives.Divide(bias, s, bias);
                    floats[biasEntry.SourceTensor] = bias;
                }
            });
        return weights;
    }

    /// <summary>W[:, j] *= s[j] in place.</summary>
    private static void ScaleColumns(float[] w, int k, float[] s)
    {
        for (int r = 0; r < w.Length / k; r++) TensorPrimitives.Multiply(w.AsSpan(r * k, k), s, w.AsSpan(r * k, k));
    }

    /// <summary>Rows the report measures per linear (evenly spaced; the error is scaled to all rows).</summary>
    public const int ReportRows = 256;

    /// <summary>
    /// Σ_rows (W' − W) H (W' − W)ᵀ: the squared output error summed over the calibration tokens, measured on at most
    /// <see cref="ReportRows"/> evenly spaced rows and scaled to N.
    /// </summary>
    public static double OutputError(float[] w, float[] wq, int n, int k, double[] hessian)
    {
        var h = new float[hessian.Length];
        for (int i = 0; i < h.Length; i++) h[i] = (float)hessian[i];
        int rows = Math.Min(n, ReportRows);
        var partial = new double[rows];
        Numerics.Parallelism.For(rows, i =>
        {
            int r = (int)((long)i * n / rows);
            var delta = new float[k];
            TensorPrimitives.Subtract(wq.AsSpan(r * k, k), w.AsSpan(r * k, k), delta);
            double sum = 0;
            for (int c = 0; c < k; c++) sum += delta[c] * (double)TensorPrimitives.Dot(h.AsSpan(c * k, k), delta);
            partial[i] = sum;
        });
        return partial.Sum() * n / rows;
    }
}
