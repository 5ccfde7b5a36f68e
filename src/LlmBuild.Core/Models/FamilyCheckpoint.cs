using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.Models;

/// <summary>
/// A checkpoint as a family's roles see it: each part of a fused tensor (<see cref="ModelFamily.FusedWeights"/>) appears
/// as its own tensor, named by <see cref="ModelFamily.FusedPartName"/>, whose rows are a row range of the fused one —
/// read in place, never copied. For the build (not the reference forward) it can also reorder the rows of every head of
/// q/k (and their biases and norms) so that RoPE in interleaved pairs or on part of the head becomes rotate-half over the
/// whole head: rotated pair i goes to dimensions (i, i + d/2), the unrotated dimensions fill the rest in order, and the
/// RoPE tables hold cos 1 / sin 0 there (<see cref="RotaryLayout"/>). Attention is unchanged: q·k is invariant under the
/// same permutation of both, and the KV cache is private to the built model.
/// </summary>
public sealed class FamilyCheckpoint : ICheckpoint
{
    private readonly ICheckpoint _inner;
    private readonly Dictionary<string, View> _views = new(StringComparer.Ordinal);
    private readonly IReadOnlyList<string> _names;

    /// <summary>A tensor presented by the view: <see cref="Rows"/> rows of <see cref="Source"/>, row r read from SourceRow(r).</summary>
    private sealed record View(TensorInfo Info, string Source, long Columns, long FirstRow, int[]? RowOrder, float AddedValue = 0)
    {
        public long SourceRow(long row) => FirstRow + (RowOrder is null ? row : RowOrder[row % RowOrder.Length] + row / RowOrder.Length * RowOrder.Length);
    }

    private FamilyCheckpoint(ICheckpoint inner, ModelFamily family, ModelConfig config, bool reorderRotaryDims)
    {
        _inner = inner;
        var hidden = new HashSet<string>(StringComparer.Ordinal);
        for (int layer = 0; layer < config.NumLayers; layer++)
        {
            foreach (FusedWeight fused in family.FusedWeights)
            {
                string name = string.Format(System.Globalization.CultureInfo.InvariantCulture, fused.Pattern, layer);
                if (!inner.Contains(name))
                {
                    if (PreQuantizedUnpacker.IsPacked(inner, name))
                        throw new LlmBuildException(ErrorCodes.UnsupportedQuantizationConfig,
                            $"'{name}' is a fused tensor stored pre-quantized; splitting packed fused weights is not supported. Use the checkpoint's float weights.", inner.Directory);
                    continue; // an optional fused tensor (a bias) the checkpoint does not have; resolve reports required ones
                }
                TensorInfo info = inner.GetInfo(name);
                long columns = info.Shape.Length == 2 ? info.Shape[1] : 1;
                long row = 0;
                long total = fused.Parts.Sum(p => RowsOf(p, config));
                if (info.Shape.Length is not (1 or 2) || info.Shape[0] != total)
                    throw new LlmBuildException(ErrorCodes.MissingWeight,
                        $"Fused tensor '{name}' in '{info.File}' has shape {info.ShapeText}, but config.json implies {total} rows ({string.Join(" + ", fused.Parts.Select(p => $"{p} {RowsOf(p, config)}"))}).", info.File);
                foreach (WeightRole part in fused.Parts)
                {
                    long rows = RowsOf(part, config);
                    string partName = ModelFamily.FusedPartName(name, part);
                    long[] shape = info.Shape.Length == 2 ? [rows, columns] : [rows];
                    _views[partName] = new View(info with { Name = partName, Shape = shape }, name, columns, row, null);
                    row += rows;
                }
                hidden.Add(name);
            }
        }
        if (reorderRotaryDims && RotaryLayout.NeedsReorder(family, config))
        {
            int[] order = RotaryLayout.SourceDimOrder(family, config);
            for (int layer = 0; layer < config.NumLayers; layer++)
                foreach (WeightRole role in new[] { WeightRole.QProj, WeightRole.KProj, WeightRole.QBias, WeightRole.KBias, WeightRole.QNorm, WeightRole.KNorm })
                {
                    if (!family.Has(role)) continue;
                    string name = family.TensorName(role, layer);
                    if (_views.TryGetValue(name, out View? part))
                        _views[name] = part with { RowOrder = order };
                    else if (inner.Contains(name))
                    {
                        TensorInfo info = inner.GetInfo(name);
                        _views[name] = new View(info, name, info.Shape.Length == 2 ? info.Shape[1] : 1, 0, order);
                    }
                    else if (PreQuantizedUnpacker.IsPacked(inner, name))
                        throw new LlmBuildException(ErrorCodes.UnsupportedQuantizationConfig,
                            $"'{name}' is stored pre-quantized, but family {family.Name}'s RoPE layout needs its rows reordered; use the checkpoint's float weights.", inner.Directory);
                }
        }
        if (reorderRotaryDims && family.NormWeightOffset != 0)
        {
            // (offset + w) norms: the build reads offset + w, computed in f32 as Hugging Face does, and stores it in f32.
            for (int layer = 0; layer < config.NumLayers; layer++)
                foreach (WeightRole role in Enum.GetValues<WeightRole>().Where(r => ModelFamily.IsNorm(r) && family.Has(r)))
                {
                    if (!ModelFamily.IsLayerRole(role) && layer > 0) continue;
                    string name = family.TensorName(role, layer);
                    if (_views.TryGetValue(name, out View? existing)) _views[name] = existing with { AddedValue = (float)family.NormWeightOffset };
                    else if (inner.Contains(name))
                    {
                        TensorInfo info = inner.GetInfo(name);
                        _views[name] = new View(info with { DType = TensorDType.F32 }, name, info.Shape.Length == 2 ? info.Shape[1] : 1, 0, null, (float)family.NormWeightOffset);
                    }
                }
        }
        if (family.Vision is { } tower && config.Vision is { } vision && inner.Contains(tower.TensorName(VisionRole.PatchEmbed)))
        {
            // The Conv3d patch embedding [embed, C, T, P, P] with stride = kernel is a linear over flattened patches:
            // presented as [embed, C·T·P·P], the same bytes.
            string name = tower.TensorName(VisionRole.PatchEmbed);
            TensorInfo info = inner.GetInfo(name);
            if (info.ElementCount == (long)vision.EmbedDim * vision.PatchDim)
                _views[name] = new View(info with { Shape = [vision.EmbedDim, vision.PatchDim] }, name, vision.PatchDim, 0, null);
        }
        _names = inner.TensorNames.Where(n => !hidden.Contains(n)).Concat(_views.Keys.Where(k => !inner.Contains(k)))
            .Order(StringComparer.Ordinal).ToArray();
    }

    /// <summary>The family's view of a checkpoint for the reference forward: fused tensors split, nothing reordered.</summary>
    public static ICheckpoint ForReference(ICheckpoint inner, ModelConfig config) =>
        Wrap(inner, ModelFamilies.Get(config.ModelType), config, reorderRotaryDims: false);

    /// <summary>The family's view of the model folder's checkpoint for the build stages.</summary>
    public static ICheckpoint OpenForBuild(string modelDir, ModelConfig config) =>
        Wrap(CheckpointLoader.Open(modelDir), ModelFamilies.Get(config.ModelType), config, reorderRotaryDims: true);

    private static ICheckpoint Wrap(ICheckpoint inner, ModelFamily family, ModelConfig config, bool reorderRotaryDims)
    {
        if (inner is FamilyCheckpoint) return inner;
        inner = SavedNameCheckpoint.Wrap(inner, family);
        bool transforms = reorderRotaryDims && (RotaryLayout.NeedsReorder(family, config) || family.NormWeightOffset != 0);
        if (family.FusedWeights.Count == 0 && !transforms && family.Vision is null) return inner;
        try { return new FamilyCheckpoint(inner, family, config, reorderRotaryDims); }
        catch { inner.Dispose(); throw; }
    }

    /// <summary>The rows a role's tensor has (its output features).</summary>
    public static long RowsOf(WeightRole role, ModelConfig c) => role switch
    {
        WeightRole.QProj or WeightRole.QBias => c.QDim,
        WeightRole.KProj or WeightRole.KBias or WeightRole.VProj or WeightRole.VBias => c.KvDim,
        WeightRole.MlpGate or WeightRole.MlpUp or WeightRole.MlpGateBias or WeightRole.MlpUpBias => c.IntermediateSize,
        _ => throw new InvalidOperationException($"{role} cannot be part of a fused tensor."),
    };

    public string Directory => _inner.Directory;
    public IReadOnlyList<string> TensorNames => _names;
    public IReadOnlyList<string> Files => _inner.Files;
    public bool Contains(string name) => _views.ContainsKey(name) || (_inner.Contains(name) && _names.Contains(name));
    public TensorInfo GetInfo(string name) => _views.TryGetValue(name, out View? v) ? v.Info : _inner.GetInfo(name);

    public void ReadFloat32(string name, long elementOffset, Span<float> destination)
    {
        if (!_views.TryGetValue(name, out View? v)) { _inner.ReadFloat32(name, elementOffset, destination); return; }
        CheckRange(v, elementOffset, destination.Length);
        foreach (var (source, start, count) in Segments(v, elementOffset, destination.Length))
            _inner.ReadFloat32(v.Source, source, destination.Slice(start, count));
        if (v.AddedValue != 0)
            foreach (ref float x in destination) x += v.AddedValue;
    }

    public void ReadRaw(string name, long byteOffset, Span<byte> destination)
    {
        if (!_views.TryGetValue(name, out View? v)) { _inner.ReadRaw(name, byteOffset, destination); return; }
        if (v.AddedValue != 0)
        {
            // Computed values (offset + w) exist only as f32: the view's dtype says so.
            if (byteOffset % 4 != 0 || destination.Length % 4 != 0)
                throw new LlmBuildException(ErrorCodes.BadTensorOffsets, $"Reads of '{name}' must cover whole f32 elements.", v.Info.File);
            ReadFloat32(name, byteOffset / 4, System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(destination));
            return;
        }
        int size = DTypes.Size(v.Info.DType);
        if (byteOffset % size != 0 || destination.Length % size != 0)
            throw new LlmBuildException(ErrorCodes.BadTensorOffsets, $"Reads of '{name}' must cover whole elements.", v.Info.File);
        CheckRange(v, byteOffset / size, destination.Length / size);
        foreach (var (source, start, count) in Segments(v, byteOffset / size, destination.Length / size))
            _inner.ReadRaw(v.Source, source * size, destination.Slice(start * size, count * size));
    }

    /// <summary>Splits [offset, offset + count) of the view into runs that are contiguous in the source tensor.</summary>
    private static List<(long SourceOffset, int Start, int Count)> Segments(View v, long offset, int count)
    {
        var segments = new List<(long, int, int)>();
        int done = 0;
        while (done < count)
        {
            long element = offset + done;
            long row = element / v.Columns, column = element % v.Columns;
            int run = (int)Math.Min(count - done, v.Columns - column);
            if (v.RowOrder is null) run = count - done; // a plain row range is contiguous throughout
            segments.Add((v.SourceRow(row) * v.Columns + column, done, run));
            done += run;
        }
        return segments;
    }

    private static void CheckRange(View v, long offset, int count)
    {
        if (offset < 0 || offset + count > v.Info.ElementCount)
            throw new LlmBuildException(ErrorCodes.BadTensorOffsets,
                $"Read of elements [{offset}, {offset + count}) is outside '{v.Info.Name}' ({v.Info.ElementCount} elements).", v.Info.File);
    }

    public void Dispose() => _inner.Dispose();
}

/// <summary>
/// How the build lays out the rotated dimensions of a head (see <see cref="FamilyCheckpoint"/>): rotate-half over the whole
/// head, with rotated pair i at dimensions (i, i + d/2) and cos 1 / sin 0 on the dimensions RoPE leaves alone.
/// </summary>
public static class RotaryLayout
{
    public static bool NeedsReorder(ModelFamily family, ModelConfig config) =>
        family.RopeMode == RopeMode.Interleaved || config.RotatedDims != config.HeadDim;

    /// <summary>For each dimension of the build's head layout, the source dimension it holds.</summary>
    public static int[] SourceDimOrder(ModelFamily family, ModelConfig config)
    {
        int d = config.HeadDim, r = config.RotatedDims, half = d / 2, pairs = r / 2;
        var order = new int[d];
        var used = new bool[d];
        for (int i = 0; i < pairs; i++)
        {
            (int a, int b) = family.RopeMode == RopeMode.Interleaved ? (2 * i, 2 * i + 1) : (i, i + pairs);
            order[i] = a;
            order[i + half] = b;
            used[a] = used[b] = true;
        }
        int next = 0;
        foreach (int slot in Enumerable.Range(pairs, half - pairs).Concat(Enumerable.Range(half + pairs, half - pairs)))
        {
            while (used[next]) next++;
            order[slot] = next;
            used[next] = true;
        }
        return order;
    }

    /// <summary>True when build dimension <paramref name="dim"/> is rotated; its frequency index is dim mod d/2.</summary>
    public static bool IsRotated(ModelConfig config, int dim) => dim % (config.HeadDim / 2) < config.RotatedDims / 2;
}
