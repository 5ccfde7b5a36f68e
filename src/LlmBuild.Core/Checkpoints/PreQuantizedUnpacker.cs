using System.Runtime.InteropServices;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Numerics;

namespace LlmBuild.Core.Checkpoints;

/// <summary>
/// Unpacks pre-quantized linear weights into the A16MatMul layout (<see cref="QuantizedLinear"/>), exactly: the
/// result dequantizes to the same values the source's own kernels compute. Layouts, written from the packing rules:
/// <list type="bullet">
/// <item>GPTQ (and AutoRound's GPTQ packings): qweight i32 [K/p, N], p = 32/b values per word along K, lowest bits
/// first; qzeros i32 [G, N/p] packed the same way along N, holding zero − 1 in the classic format; scales [G, N];
/// g_idx i32 [K] maps each input to its group. With act-order the groups are not contiguous runs of K: the inputs
/// are permuted so they are, and <see cref="QuantizedLinear.InputPermutation"/> records the order.</item>
/// <item>AWQ gemm: qweight i32 [K, N/8] packed along N with nibble i holding channel 8c + (0,2,4,6,1,3,5,7)[i];
/// qzeros i32 [G, N/8] likewise (zero stored as is); scales [G, N].</item>
/// <item>compressed-tensors pack-quantized: weight_packed i32 [N, ⌈K/p⌉] packed along K lowest bits first, values
/// stored as signed + 2^(b−1); weight_scale [N, G]; weight_zero_point i32 [⌈N/p⌉, G] packed along N (asymmetric
/// only; symmetric means zero 2^(b−1) in unsigned terms); weight_shape i32 [2]; optional weight_g_idx.</item>
/// </list>
/// </summary>
public static class PreQuantizedUnpacker
{
    private static readonly int[] AwqNibbleOfChannel = [0, 4, 1, 5, 2, 6, 3, 7];

    /// <summary>The stem of a weight name: "x.weight" → "x".</summary>
    internal static string Stem(string weightName) =>
        weightName.EndsWith(".weight", StringComparison.Ordinal) ? weightName[..^".weight".Length] : weightName;

    /// <summary>True when the checkpoint holds <c>x.qweight</c> (or <c>x.weight_packed</c>) for <c>x.weight</c>.</summary>
    public static bool IsPacked(ICheckpoint checkpoint, string weightName) =>
        checkpoint.Contains(Stem(weightName) + ".qweight") || checkpoint.Contains(Stem(weightName) + ".weight_packed");

    /// <summary>
    /// True when the weight's group index orders its inputs out of group order (act-order), so <see cref="Unpack"/>
    /// permutes them and the graph must gather its input. Reads only the small g_idx tensor.
    /// </summary>
    public static bool PermutesInputs(ICheckpoint checkpoint, PreQuantizedFormat format, string weightName)
    {
        string stem = Stem(weightName);
        var (gIdxSuffix, scalesSuffix, groupAxis) = format.Layout switch
        {
            PackingLayout.Gptq => ("g_idx", "scales", 0),
            PackingLayout.PackQuantized => ("weight_g_idx", "weight_scale", 1),
            _ => ("", "", 0), // AWQ has no group index
        };
        string gIdxName = stem + "." + gIdxSuffix;
        if (gIdxSuffix.Length == 0 || !checkpoint.Contains(gIdxName)) return false;
        var gIdxInfo = checkpoint.GetInfo(gIdxName);
        var scales = Tensor(checkpoint, stem, scalesSuffix, null, 2);
        if (gIdxInfo.Shape.Length != 1) throw Bad(checkpoint, $"'{gIdxName}' has shape {gIdxInfo.ShapeText}; expected one dimension.");
        int k = checked((int)gIdxInfo.Shape[0]);
        int[] gIdx = ReadGroupIndex(checkpoint, gIdxName, k, checked((int)scales.Shape[groupAxis]), format.GroupSize, out int g)!;
        return !IsTrivial(gIdx, g);
    }

    public static QuantizedLinear Unpack(ICheckpoint checkpoint, PreQuantizedFormat format, string weightName) => format.Layout switch
    {
        PackingLayout.Gptq => UnpackGptq(checkpoint, format, Stem(weightName)),
        PackingLayout.AwqGemm => UnpackAwq(checkpoint, format, Stem(weightName)),
        PackingLayout.PackQuantized => UnpackPackQuantized(checkpoint, format, Stem(weightName)),
        _ => throw new InvalidOperationException(format.Layout.ToString()),
    };

    private static QuantizedLinear UnpackGptq(ICheckpoint c, PreQuantizedFormat f, string stem)
    {
        int b = f.Bits, p = 32 / b, mask = (1 << b) - 1;
        var qwInfo = Tensor(c, stem, "qweight", TensorDType.I32, 2);
        var scInfo = Tensor(c, stem, "scales", null, 2);
        var qzInfo = Tensor(c, stem, "qzeros", TensorDType.I32, 2);
        int k = checked((int)qwInfo.Shape[0] * p), n = checked((int)qwInfo.Shape[1]);
        int groups = checked((int)scInfo.Shape[0]);
        Expect(scInfo, [groups, n], stem);
        Expect(qzInfo, [groups, (n + p - 1) / p], stem);
        int[]? gIdx = ReadGroupIndex(c, stem + ".g_idx", k, groups, f.GroupSize, out int g);
        int[] qw = ReadInts(c, qwInfo);
        float[] scales = ReadFloats(c, scInfo);
        int[] qz = ReadInts(c, qzInfo);
        int zeroOffset = f.ZeroMinusOne ? 1 : 0;
        return Assemble(n, k, b, g, groups, gIdx,
            (row, col) => (qw[(col / p) * n + row] >>> (b * (col % p))) & mask,
            (row, grp) => scales[grp * n + row],
            (row, grp) => ((qz[grp * qzInfo.Shape[1] + row / p] >>> (b * (row % p))) & mask) + zeroOffset,
            stem);
    }

    private static QuantizedLinear UnpackAwq(ICheckpoint c, PreQuantizedFormat f, string stem)
    {
        var qwInfo = Tensor(c, stem, "qweight", TensorDType.I32, 2);
        var scInfo = Tensor(c, stem, "scales", null, 2);
        if (!c.Contains(stem + ".qzeros"))
            throw Bad(c, $"AWQ weight '{stem}' has no qzeros; AWQ without zero points is not supported.");
        var qzInfo = Tensor(c, stem, "qzeros", TensorDType.I32, 2);
        int k = checked((int)qwInfo.Shape[0]), n = checked((int)qwInfo.Shape[1] * 8);
        int groups = checked((int)scInfo.Shape[0]);
        Expect(scInfo, [groups, n], stem);
        Expect(qzInfo, [groups, n / 8], stem);
        int g = GroupSizeFor(k, groups, f.GroupSize, stem, c);
        int[] qw = ReadInts(c, qwInfo);
        float[] scales = ReadFloats(c, scInfo);
        int[] qz = ReadInts(c, qzInfo);
        return Assemble(n, k, 4, g, groups, null,
            (row, col) => (qw[col * (n / 8) + row / 8] >>> (4 * AwqNibbleOfChannel[row % 8])) & 0xF,
            (row, grp) => scales[grp * n + row],
            (row, grp) => (qz[grp * (n / 8) + row / 8] >>> (4 * AwqNibbleOfChannel[row % 8])) & 0xF,
            stem);
    }

    private static QuantizedLinear UnpackPackQuantized(ICheckpoint c, PreQuantizedFormat f, string stem)
    {
        int b = f.Bits, p = 32 / b, mask = (1 << b) - 1, offset = 1 << (b - 1);
        var pkInfo = Tensor(c, stem, "weight_packed", TensorDType.I32, 2);
        var scInfo = Tensor(c, stem, "weight_scale", null, 2);
        int n = checked((int)pkInfo.Shape[0]), packedCols = checked((int)pkInfo.Shape[1]);
        int k = packedCols * p;
        if (c.Contains(stem + ".weight_shape"))
        {
            var shapeInfo = c.GetInfo(stem + ".weight_shape");
            long[] shape = shapeInfo.DType switch
            {
                TensorDType.I32 => ReadInts(c, shapeInfo).Select(v => (long)v).ToArray(),
                TensorDType.I64 => MemoryMarshal.Cast<byte, long>(ReadRaw(c, shapeInfo)).ToArray(),
                _ => throw Bad(c, $"'{stem}.weight_shape' has dtype {shapeInfo.DType}; expected I32 or I64."),
            };
            if (shape.Length != 2 || shape[0] != n || shape[1] > k || shape[1] <= k - p)
                throw Bad(c, $"'{stem}.weight_shape' [{string.Join(", ", shape)}] disagrees with weight_packed {pkInfo.ShapeText}.");
            k = (int)shape[1];
        }
        int groups = checked((int)scInfo.Shape[1]);
        Expect(scInfo, [n, groups], stem);
        int[]? gIdx = ReadGroupIndex(c, stem + ".weight_g_idx", k, groups, f.GroupSize, out int g);
        int[] packed = ReadInts(c, pkInfo);
        float[] scales = ReadFloats(c, scInfo);
        Func<int, int, int> zero = (_, _) => offset;
        if (!f.Symmetric)
        {
            var zpInfo = Tensor(c, stem, "weight_zero_point", TensorDType.I32, 2);
            Expect(zpInfo, [(n + p - 1) / p, groups], stem);
            int[] zp = ReadInts(c, zpInfo);
            zero = (row, grp) => (zp[(row / p) * groups + grp] >>> (b * (row % p))) & mask;
        }
        return Assemble(n, k, b, g, groups, gIdx,
            (row, col) => (packed[row * packedCols + col / p] >>> (b * (col % p))) & mask,
            (row, grp) => scales[row * groups + grp],
            zero, stem);
    }

    /// <summary>
    /// Builds the A16MatMul layout from element accessors in source terms (row = output n, col = original input k,
    /// group = source group index). With a non-trivial group index the inputs are permuted so groups are contiguous.
    /// </summary>
    private static QuantizedLinear Assemble(int n, int k, int bits, int g, int groups, int[]? gIdx,
        Func<int, int, int> q, Func<int, int, float> scale, Func<int, int, int> zero, string stem)
    {
        int[]? permutation = null;
        if (gIdx is not null && !IsTrivial(gIdx, g))
        {
            // Stable sort of the inputs by group: group j's members become the contiguous run [j·g, (j+1)·g).
            permutation = Enumerable.Range(0, k).OrderBy(i => gIdx[i]).ThenBy(i => i).ToArray();
            for (int col = 0; col < k; col++)
                if (gIdx[permutation[col]] != col / g)
                    throw new LlmBuildException(ErrorCodes.BadPreQuantizedTensor,
                        $"'{stem}.g_idx' does not give every group exactly {g} inputs, so its groups cannot be laid out contiguously.");
        }
        int rowBytes = bits == 4 ? k / 2 : k, outGroups = k / g;
        if (outGroups != groups)
            throw new LlmBuildException(ErrorCodes.BadPreQuantizedTensor, $"'{stem}' has {groups} groups but K = {k} with group size {g} needs {outGroups}.");
        var result = new QuantizedLinear(n, k, bits, g, new byte[(long)n * rowBytes], new float[(long)n * groups], new byte[(long)n * groups])
        {
            InputPermutation = permutation,
        };
        int maxZero = bits == 4 ? 16 : 255; // a classic GPTQ zero of 0 reads back as 16 (its kernels use 16 too); u8 holds it
        Parallelism.For(Math.Max(1, (n + 63) / 64), t =>
        {
            byte[] row = new byte[k];
            for (int r = t * 64; r < Math.Min(n, (t + 1) * 64); r++)
            {
                for (int col = 0; col < k; col++) row[col] = (byte)q(r, permutation is null ? col : permutation[col]);
                if (bits == 4) QuantizedLinear.PackNibbles(row, result.QWeight.AsSpan(r * rowBytes, rowBytes));
                else row.CopyTo(result.QWeight.AsSpan(r * rowBytes, rowBytes));
                for (int j = 0; j < groups; j++)
                {
                    result.Scales[r * groups + j] = scale(r, j);
                    int z = zero(r, j);
                    if (z > maxZero)
                        throw new LlmBuildException(ErrorCodes.BadPreQuantizedTensor,
                            $"'{stem}' row {r} group {j} has zero point {z}, which does not fit {bits}-bit storage.");
                    result.QZeros[r * groups + j] = (byte)z;
                }
            }
        });
        return result;
    }

    private static bool IsTrivial(int[] gIdx, int g)
    {
        for (int i = 0; i < gIdx.Length; i++) if (gIdx[i] != i / g) return false;
        return true;
    }

    private static int[]? ReadGroupIndex(ICheckpoint c, string name, int k, int groups, int configGroupSize, out int g)
    {
        g = GroupSizeFor(k, groups, configGroupSize, name, c);
        if (!c.Contains(name)) return null;
        var info = c.GetInfo(name);
        if (info.Shape.Length != 1 || info.Shape[0] != k)
            throw Bad(c, $"'{name}' has shape {info.ShapeText}; expected [{k}].");
        int[] gIdx = info.DType switch
        {
            TensorDType.I32 => ReadInts(c, info),
            TensorDType.I64 => MemoryMarshal.Cast<byte, long>(ReadRaw(c, info)).ToArray().Select(v => (int)v).ToArray(),
            _ => throw Bad(c, $"'{name}' has dtype {info.DType}; expected I32."),
        };
        foreach (int v in gIdx)
            if (v < 0 || v >= groups) throw Bad(c, $"'{name}' holds group {v}, outside 0..{groups - 1}.");
        return gIdx;
    }

    private static int GroupSizeFor(int k, int groups, int configGroupSize, string stem, ICheckpoint c)
    {
        if (groups <= 0 || k % groups != 0)
            throw Bad(c, $"'{stem}' has {groups} groups, which do not divide K = {k}.");
        int g = k / groups;
        if (configGroupSize != 0 && configGroupSize != g)
            throw Bad(c, $"'{stem}' is grouped by {g} inputs but quantization_config says group_size {configGroupSize}.");
        return g;
    }

    private static TensorInfo Tensor(ICheckpoint c, string stem, string suffix, TensorDType? dtype, int rank)
    {
        string name = stem + "." + suffix;
        if (!c.Contains(name))
            throw Bad(c, $"Pre-quantized weight '{stem}' lacks '{name}'. The checkpoint is incomplete or not in the format its quantization_config names.");
        var info = c.GetInfo(name);
        if (dtype is not null && info.DType != dtype)
            throw Bad(c, $"'{name}' in '{info.File}' has dtype {info.DType}; the format stores {dtype}.");
        if (dtype is null && !DTypes.IsFloat(info.DType))
            throw Bad(c, $"'{name}' in '{info.File}' has dtype {info.DType}; scales must be a float type.");
        if (info.Shape.Length != rank)
            throw Bad(c, $"'{name}' in '{info.File}' has shape {info.ShapeText}; expected {rank} dimensions.");
        return info;
    }

    private static void Expect(TensorInfo info, long[] shape, string stem)
    {
        if (!info.Shape.AsSpan().SequenceEqual(shape))
            throw new LlmBuildException(ErrorCodes.BadPreQuantizedTensor,
                $"'{info.Name}' in '{info.File}' has shape {info.ShapeText}, but '{stem}''s other tensors imply [{string.Join(", ", shape)}].", info.File);
    }

    private static byte[] ReadRaw(ICheckpoint c, TensorInfo info)
    {
        byte[] bytes = new byte[info.ByteLength];
        c.ReadRaw(info.Name, bytes);
        return bytes;
    }

    private static int[] ReadInts(ICheckpoint c, TensorInfo info)
    {
        int[] v = new int[info.ElementCount];
        c.ReadRaw(info.Name, MemoryMarshal.AsBytes(v.AsSpan()));
        return v;
    }

    private static float[] ReadFloats(ICheckpoint c, TensorInfo info)
    {
        float[] v = new float[info.ElementCount];
        c.ReadFloat32(info.Name, v);
        return v;
    }

    private static LlmBuildException Bad(ICheckpoint c, string what) =>
        new(ErrorCodes.BadPreQuantizedTensor, what, c.Directory);
}
