using System.Globalization;
using System.Text;
using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Quantization;

namespace LlmBuild.Core.Calibration;

/// <summary>
/// Mixed precision under QuantizeBudget. Each block linear's sensitivity is its output error on the calibration data,
/// Σ_tokens |ΔW x|² = Σ_rows Δ H Δᵀ with the layer's cached Hessian (<see cref="CalibratedLayer.OutputError"/>), when
/// rounded to nearest at 4 bits and at 8 bits, with the build's group size and symmetry, relative to its float output
/// Σ |W x|² (a noise-to-signal ratio, comparable between a q_proj and a down_proj, an early layer and a late one). Every
/// linear starts at 4 bits; in order of relative error removed per extra byte (E4 − E8) / S / (bytes8 − bytes4), ties
/// broken by tensor name, a linear moves to 8 bits when it still fits the budget. (On the example, ranking by absolute
/// error, or without the per-byte division, chose worse sets at the same budget; see the README.) The choice depends only on the statistics, the weights, the scheme and the
/// budget, so it is deterministic and a group-size change reuses the forward passes (the statistics cache).
/// Linears calibration does not observe (none in the dense families calibration serves) stay at 4 bits with zero errors.
/// </summary>
public static class MixedPrecision
{
    public static PrecisionChoice Choose(ICheckpoint checkpoint, ResolvedModel model, string statsDir)
    {
        WeightBudget budget = model.Calibration?.Budget ?? throw new InvalidOperationException("The build has no QuantizeBudget.");
        var candidates = WeightBudget.Candidates(model);
        var candidateKeys = candidates.Select(e => e.Key).ToHashSet(StringComparer.Ordinal);
        long other = model.Owners.SelectMany(o => o.Entries).DistinctBy(e => e.Key).Where(e => !candidateKeys.Contains(e.Key)).Sum(model.StoredBytes);
        long target = budget.CandidateBytes(model, other);
        var lines = new List<LinearWidth>();
        foreach (var layer in candidates.GroupBy(e => e.Layer))
        {
            string path = Path.Combine(statsDir, LayerStatistics.FileName(layer.Key));
            LayerStatistics stats = LayerStatistics.TryRead(path, layer.Key, [])
                ?? throw new LlmBuildException(ErrorCodes.CalibrationCacheDiscarded, $"The calibration statistics '{path}' are missing or damaged. Build again to compute them.", path);
            foreach (WeightEntry e in layer)
            {
                int n = checked((int)e.Shape[0]), k = checked((int)e.Shape[1]);
                long bytes4 = WeightBudget.LinearBytes(n, k, 4, model.Weights.GroupSize), bytes8 = WeightBudget.LinearBytes(n, k, 8, model.Weights.GroupSize);
                double e4 = 0, e8 = 0, signal = 0;
                if (CalibratedLayer.InputOf(e.Role) is { } input && stats.Groups.TryGetValue(input, out var group))
                {
                    var w = new float[(long)n * k];
                    checkpoint.ReadFloat32(e.SourceTensor, w);
                    double Error(int bits) => CalibratedLayer.OutputError(w,
                        LinearQuantizer.DequantizeInSourceOrder(LinearQuantizer.Quantize(w, n, k, model.Weights with { Bits = bits }, e.SourceTensor)), n, k, group.Hessian);
                    e4 = Error(4);
                    e8 = Error(8);
                    // Σ |W x|²: the same measure of the float output (W − 0 against 0).
                    signal = CalibratedLayer.OutputError(w, new float[w.Length], n, k, group.Hessian);
                }
                lines.Add(new LinearWidth(e.Layer, e.Role.ToString(), e.SourceTensor, 4, e4, e8, signal, bytes4, bytes8));
            }
        }
        long used = lines.Sum(l => l.Bytes4);
        var promoted = new HashSet<string>(StringComparer.Ordinal);
        foreach (var l in lines.Where(l => l.Error4 > l.Error8 && l.Signal > 0)
                     .OrderByDescending(l => (l.Error4 - l.Error8) / l.Signal / (l.Bytes8 - l.Bytes4)).ThenBy(l => l.Tensor, StringComparer.Ordinal))
        {
            if (used + l.Bytes8 - l.Bytes4 > target) continue;
            used += l.Bytes8 - l.Bytes4;
            promoted.Add(l.Tensor);
        }
        lines = [.. lines.Select(l => promoted.Contains(l.Tensor) ? l with { Bits = 8 } : l)];
        long weights = candidates.Sum(e => e.Shape[0] * e.Shape[1]);
        return new PrecisionChoice(budget.ToString(), target, used, Math.Round(used * 8.0 / weights, 4), lines);
    }

    /// <summary>The build log's table: per linear the width kept and its errors at 4 and 8 bits, then the totals.</summary>
    public static string Table(PrecisionChoice choice)
    {
        var table = new StringBuilder();
        table.AppendLine(CultureInfo.InvariantCulture, $"{"layer",5} {"linear",-10} {"bits",4} {"w4 rel. error",13} {"w8 rel. error",13}");
        foreach (var l in choice.Linears)
        {
            double signal = l.Signal > 0 ? l.Signal : 1;
            table.AppendLine(CultureInfo.InvariantCulture, $"{l.Layer,5} {l.Role,-10} {l.Bits,4} {l.Error4 / signal,13:G4} {l.Error8 / signal,13:G4}");
        }
        int eight = choice.Linears.Count(l => l.Bits == 8);
        table.AppendLine(CultureInfo.InvariantCulture,
            $"{eight} of {choice.Linears.Count} linears at 8 bits: {choice.Bytes / 1048576.0:0.00} MiB of block linears ({choice.BitsPerWeight:0.###} bpw), budget {choice.Budget} allows {choice.TargetBytes / 1048576.0:0.00} MiB");
        return table.ToString();
    }
}
