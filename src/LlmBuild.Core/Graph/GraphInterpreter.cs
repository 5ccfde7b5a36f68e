using System.Numerics.Tensors;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Models;
using LlmBuild.Core.Plan;

namespace LlmBuild.Core.Graph;

/// <summary>Where an interpreter gets a piece's owner weights, by npz key.</summary>
public interface IWeightSource
{
    /// <summary>
    /// The values of an f32, bf16 or f16 weight (its <see cref="GraphWeight.Key"/>), as f32, row-major: the whole stored
    /// entry (the interpreter cuts a tensor-parallel shard's slice itself).
    /// </summary>
    float[] ReadFloat(string key);

    /// <summary>The bytes of a ui8 weight (qweight, qzeros).</summary>
    byte[] ReadBytes(string key);
}

/// <summary>
/// Runs a <see cref="PieceGraph"/> in f32 on the CPU: the executable meaning of every op the builder emits, used to
/// check exported pieces against the reference model and as the specification the codegen/emulator must match.
/// Integer inputs (ids, positions, top_k) are passed as f32 values. Quantized weights are dequantized
/// (w = (q − zp) · scale per group). Not tuned for speed beyond parallel matrix products.
/// </summary>
public sealed class GraphInterpreter(PieceGraph graph, IWeightSource weights)
{
    private readonly Dictionary<string, float[]> _floatWeights = new(StringComparer.Ordinal);
    private readonly Dictionary<string, byte[]> _byteWeights = new(StringComparer.Ordinal);
    private readonly Dictionary<string, float[]> _dequantized = new(StringComparer.Ordinal);

    public PieceGraph Graph { get; } = graph;

    /// <summary>
    /// Called with every op's outputs after it ran (the op, the output's index, its values, which may be changed in
    /// place): tests round them to bf16 to measure what a forward that keeps every intermediate in bf16 (as Hugging
    /// Face's own bf16 inference does) loses, or record the experts a TopK chose. Null: plain f32.
    /// </summary>
    public Action<GraphOp, int, float[]>? AfterOp { get; init; }

    /// <summary>Runs the graph; returns its outputs by name, in contract order.</summary>
    public IReadOnlyDictionary<string, float[]> Run(IReadOnlyDictionary<string, float[]> inputs)
    {
        var values = new Dictionary<string, float[]>(StringComparer.Ordinal);
        foreach (GraphTensor t in Graph.InputTensors)
        {
            if (!inputs.TryGetValue(t.Name, out float[]? data))
                throw new LlmBuildException(ErrorCodes.GraphBadInput, $"Piece {Graph.Name}: input '{t.Name}' was not given.");
            if (data.Length != t.ElementCount)
                throw new LlmBuildException(ErrorCodes.GraphBadInput,
                    $"Piece {Graph.Name}: input '{t.Name}' has {data.Length} values, its shape [{string.Join(",", t.Shape)}] needs {t.ElementCount}.");
            values[t.Name] = data;
        }
        foreach (GraphConstant c in Graph.Constants) values[c.Key] = c.Data;
        foreach (GraphWeight w in Graph.Weights)
        {
            if (w.DType == GraphDType.UI8) continue; // read as bytes by the op that uses it
            if (!_floatWeights.TryGetValue(w.Key, out float[]? data))
            {
                data = weights.ReadFloat(w.Key);
                CheckStored(w, data.Length);
                if (w.Slice is { } slice) data = slice.Apply<float>(data);
                _floatWeights[w.Key] = data;
            }
            values[w.Key] = data;
        }
        foreach (GraphOp op in Graph.Ops)
        {
            Execute(op, values);
            if (AfterOp is not null)
                for (int i = 0; i < op.Outputs.Count; i++)
                    if (op.Outputs[i].Length > 0) AfterOp(op, i, values[op.Outputs[i]]);
        }
        return Graph.Outputs.ToDictionary(o => o, o => values[o], StringComparer.Ordinal);
    }

    private long[] Shape(string name) => Graph.Tensor(name).Shape;

    /// <summary>Checks the element count of a weight as stored (the whole entry, before any tensor-parallel slice).</summary>
    private void CheckStored(GraphWeight w, long count)
    {
        if (count != w.StoredShape.Aggregate(1L, (a, b) => a * b))
            throw new LlmBuildException(ErrorCodes.GraphBadInput, $"Piece {Graph.Name}: weight '{w.Key}' has {count} values, expected shape [{string.Join(",", w.StoredShape)}].");
    }

    private void Execute(GraphOp op, Dictionary<string, float[]> v)
    {
        float[] In(int i) => v[op.Inputs[i]];
        string outName = op.Outputs[0];
        long[] outShape = Shape(outName);
        switch (op.Kind)
        {
            case "top.Gather": v[outName] = Gather(op, In(0), Shape(op.Inputs[0]), In(1)); break;
            case "top.RMSNorm": v[outName] = RmsNorm(In(0), In(1), op.Float("eps")); break;
            case "top.MatMul": v[outName] = MatMul(op, In(0), Shape(op.Inputs[0]), In(1), Shape(op.Inputs[1]), op.Inputs[2].Length > 0 ? In(2) : null); break;
            case "top.A16MatMul": v[outName] = A16MatMul(op, In(0), Shape(op.Inputs[0]), op.Inputs[4].Length > 0 ? In(4) : null); break;
            case "top.Reshape": v[outName] = In(0); break;
            case "top.Permute": v[outName] = Permute(In(0), Shape(op.Inputs[0]), op.Attr("order").Ints!); break;
            case "top.Slice": v[outName] = Slice(op, In(0), Shape(op.Inputs[0]), outShape); break;
            case "top.MulConst": v[outName] = Map(In(0), x => x * (float)op.Float("const_val")); break;
            case "top.SiLU": v[outName] = Map(In(0), x => x / (1f + MathF.Exp(-x))); break;
            case "top.GELU": v[outName] = Map(In(0), op.Find("approx_mode")?.Str == "tanh" ? GeluTanh : Numerics.SpecialFunctions.GeluErf); break;
            case "top.LayerNorm": v[outName] = LayerNorm(In(0), In(1), op.Inputs[2].Length > 0 ? In(2) : null, op.Float("eps")); break;
            case "top.Tanh": v[outName] = Map(In(0), MathF.Tanh); break;
            case "top.Add": v[outName] = Binary(op, v, outShape, (a, b) => a + b); break;
            case "top.Sub": v[outName] = Binary(op, v, outShape, (a, b) => a - b); break;
            case "top.Mul": v[outName] = Binary(op, v, outShape, (a, b) => a * b); break;
            case "top.Div": v[outName] = Binary(op, v, outShape, (a, b) => a / b); break;
            case "top.Compare": v[outName] = Binary(op, v, outShape, Comparison(op.Attr("mode").Str!)); break;
            case "top.CompareConst":
            {
                var cmp = Comparison(op.Attr("mode").Str!);
                float c = (float)op.Float("const_val");
                bool inversed = op.BoolOr("inversed", false);
                v[outName] = Map(In(0), x => inversed ? cmp(c, x) : cmp(x, c));
                break;
            }
            case "top.Concat": v[outName] = Concat(op, v, outShape); break;
            case "top.FAttention": v[outName] = Attention(op, In(0), In(1), In(2), op.Inputs[3].Length > 0 ? In(3) : null); break;
            case "top.TopK": TopK(op, v); break;
            case "top.Softmax": v[outName] = Softmax(In(0), LastAxis(op, outShape, "axis")); break;
            case "top.GatherElements": v[outName] = GatherElements(op, In(0), Shape(op.Inputs[0]), In(1), outShape); break;
            case "top.ScatterElements": v[outName] = ScatterElements(op, In(0), Shape(op.Inputs[0]), In(1), Shape(op.Inputs[1]), In(2)); break;
            case "top.Where": v[outName] = Where(op, v, outShape); break;
            case "top.CumSum": v[outName] = CumSum(In(0), LastAxis(op, outShape, "axis")); break;
            case "top.ScatterND": v[outName] = ScatterND(In(0), Shape(op.Inputs[0]), In(1), Shape(op.Inputs[1]), In(2)); break;
            default:
                throw new LlmBuildException(ErrorCodes.GraphUnsupported, $"Piece {Graph.Name}: the interpreter has no implementation of {op.Kind}.");
        }
    }

    private static float[] Map(float[] x, Func<float, float> f)
    {
        var y = new float[x.Length];
        for (int i = 0; i < x.Length; i++) y[i] = f(x[i]);
        return y;
    }

    private static Func<float, float, float> Comparison(string mode) => mode switch
    {
        "Less" => (a, b) => a < b ? 1f : 0f,
        "LessOrEqual" => (a, b) => a <= b ? 1f : 0f,
        "Greater" => (a, b) => a > b ? 1f : 0f,
        "GreaterOrEqual" => (a, b) => a >= b ? 1f : 0f,
        "Equal" => (a, b) => a == b ? 1f : 0f,
        "NotEqual" => (a, b) => a != b ? 1f : 0f,
        _ => throw new LlmBuildException(ErrorCodes.GraphUnsupported, $"Compare mode '{mode}' is not implemented by the interpreter."),
    };

    /// <summary>Checks that an axis attribute names the last axis (the only one the graphs reduce over).</summary>
    private int LastAxis(GraphOp op, long[] shape, string attr)
    {
        long axis = op.Int(attr);
        if (axis < 0) axis += shape.Length;
        if (axis != shape.Length - 1)
            throw new LlmBuildException(ErrorCodes.GraphUnsupported, $"Piece {Graph.Name}: {op.Kind} over axis {axis} of a rank-{shape.Length} tensor is not implemented.");
        return (int)shape[^1];
    }

    /// <summary>y = table taken at <paramref name="indices"/> along the op's axis (rows of a table, or an input's columns).</summary>
    private float[] Gather(GraphOp op, float[] table, long[] tableShape, float[] indices)
    {
        var (outer, extent, inner) = GatherLayout(op, tableShape);
        var y = new float[outer * indices.Length * inner];
        for (int i = 0; i < indices.Length; i++)
        {
            long at = (long)indices[i];
            if (at < 0 || at >= extent || at != indices[i])
                throw new LlmBuildException(ErrorCodes.GraphBadInput, $"Piece {Graph.Name}: index {indices[i]} given to {op.Outputs[0]} is outside 0..{extent - 1}.");
            for (long o = 0; o < outer; o++)
                table.AsSpan((int)((o * extent + at) * inner), (int)inner).CopyTo(y.AsSpan((int)((o * indices.Length + i) * inner)));
        }
        return y;
    }

    /// <summary>A gather's input as [outer, extent, inner] around its axis (negative axes count from the end).</summary>
    internal static (long Outer, long Extent, long Inner) GatherLayout(GraphOp op, long[] shape)
    {
        long axis = op.Int("axis");
        if (axis < 0) axis += shape.Length;
        if (axis < 0 || axis >= shape.Length)
            throw new LlmBuildException(ErrorCodes.GraphUnsupported, $"{op.Kind} ({op.Outputs[0]}): axis {op.Int("axis")} of a rank-{shape.Length} tensor.");
        long outer = 1, inner = 1;
        for (int d = 0; d < axis; d++) outer *= shape[d];
        for (long d = axis + 1; d < shape.Length; d++) inner *= shape[d];
        return (outer, shape[axis], inner);
    }

    /// <summary>(x − mean) / √(var + eps) · gamma (+ beta) over the last dimension (the width of gamma).</summary>
    private static float[] LayerNorm(float[] x, float[] gamma, float[]? beta, double eps)
    {
        int width = gamma.Length;
        var y = new float[x.Length];
        for (int r = 0; r < x.Length / width; r++)
        {
            var row = x.AsSpan(r * width, width);
            float mean = TensorPrimitives.Sum(row) / width, variance = 0;
            foreach (float a in row) variance += (a - mean) * (a - mean);
            float inv = 1f / MathF.Sqrt(variance / width + (float)eps);
            var o = y.AsSpan(r * width, width);
            for (int i = 0; i < width; i++) o[i] = (row[i] - mean) * inv * gamma[i] + (beta?[i] ?? 0f);
        }
        return y;
    }

    private static float[] RmsNorm(float[] x, float[] gamma, double eps)
    {
        int width = gamma.Length;
        var y = new float[x.Length];
        for (int r = 0; r < x.Length / width; r++)
        {
            var row = x.AsSpan(r * width, width);
            float inv = 1f / MathF.Sqrt(TensorPrimitives.Dot(row, row) / width + (float)eps);
            var o = y.AsSpan(r * width, width);
            for (int i = 0; i < width; i++) o[i] = row[i] * inv * gamma[i];
        }
        return y;
    }

    private float[] MatMul(GraphOp op, float[] x, long[] xShape, float[] w, long[] wShape, float[]? bias)
    {
        if (wShape.Length > 2 && wShape.Length == xShape.Length && bias is null) return BatchedMatMul(op, x, xShape, w, wShape);
        if (wShape.Length != 2) throw new LlmBuildException(ErrorCodes.GraphUnsupported, $"Piece {Graph.Name}: MatMul with a rank-{wShape.Length} right operand.");
        bool transposed = op.BoolOr("right_transpose", false);
        int k = (int)xShape[^1];
        int n = (int)(transposed ? wShape[0] : wShape[1]);
        if ((transposed ? wShape[1] : wShape[0]) != k)
            throw new LlmBuildException(ErrorCodes.GraphBadShape, $"Piece {Graph.Name}: {op.Outputs[0]} multiplies K={k} by [{string.Join(",", wShape)}].");
        float[] nk = transposed ? w : Transpose(w, k, n);
        return Dense(x, k, nk, n, bias);
    }

    /// <summary>[…, M, K] × [same …, K, N] (or [N, K] with right_transpose): one matrix product per leading index.</summary>
    private float[] BatchedMatMul(GraphOp op, float[] x, long[] xShape, float[] w, long[] wShape)
    {
        bool transposed = op.BoolOr("right_transpose", false);
        int r = xShape.Length;
        int m = (int)xShape[r - 2], k = (int)xShape[r - 1], n = (int)(transposed ? wShape[r - 2] : wShape[r - 1]);
        if (!xShape[..(r - 2)].SequenceEqual(wShape[..(r - 2)]) || (transposed ? wShape[r - 1] : wShape[r - 2]) != k)
            throw new LlmBuildException(ErrorCodes.GraphBadShape, $"Piece {Graph.Name}: {op.Outputs[0]} multiplies [{string.Join(",", xShape)}] by [{string.Join(",", wShape)}].");
        long batches = xShape[..(r - 2)].Aggregate(1L, (a, b) => a * b);
        var y = new float[batches * m * n];
        for (long i = 0; i < batches; i++)
        {
            float[] xi = x.AsSpan((int)(i * m * k), m * k).ToArray(), wi = w.AsSpan((int)(i * k * n), k * n).ToArray();
            Dense(xi, k, transposed ? wi : Transpose(wi, k, n), n, null).CopyTo(y, i * m * n);
        }
        return y;
    }

    /// <summary>out = x with its axes reordered: out.shape[i] = x.shape[order[i]].</summary>
    private static float[] Permute(float[] x, long[] xShape, long[] order)
    {
        int rank = xShape.Length;
        var strides = new long[rank];
        for (long i = rank - 1, s = 1; i >= 0; s *= xShape[i], i--) strides[i] = s;
        long[] outShape = order.Select(a => xShape[a]).ToArray();
        var y = new float[x.Length];
        var index = new long[rank];
        for (long o = 0; o < y.Length; o++)
        {
            long source = 0;
            for (int a = 0; a < rank; a++) source += index[a] * strides[order[a]];
            y[o] = x[source];
            for (int a = rank - 1; a >= 0 && ++index[a] == outShape[a]; a--) index[a] = 0;
        }
        return y;
    }

    private float[] A16MatMul(GraphOp op, float[] x, long[] xShape, float[]? bias)
    {
        string qweightKey = op.Inputs[1];
        if (!_dequantized.TryGetValue(qweightKey, out float[]? w))
        {
            long[] qShape = Shape(qweightKey);
            int bits = (int)op.IntOr("weight_bits", 8), group = (int)op.IntOr("q_group_size", 128);
            if (!op.BoolOr("right_transpose", false))
                throw new LlmBuildException(ErrorCodes.GraphUnsupported, $"Piece {Graph.Name}: A16MatMul without right_transpose.");
            int n = (int)qShape[0], k = (int)qShape[1] * 8 / bits;
            byte[] q = Bytes(qweightKey), zeros = Bytes(op.Inputs[3]);
            float[] scales = _floatWeights[op.Inputs[2]]; // f32 weights (sliced if need be) are loaded by Run
            w = Dequantize(q, scales, zeros, n, k, bits, group);
            _dequantized[qweightKey] = w;
        }
        int kk = (int)xShape[^1];
        return Dense(x, kk, w, w.Length / kk, bias);
    }

    /// <summary>w[n, k] = (q − zp[n, k/g]) · scale[n, k/g]; 4-bit codes sit two per byte, the even element in the low nibble.</summary>
    public static float[] Dequantize(byte[] q, float[] scales, byte[] zeros, int n, int k, int bits, int group)
    {
        int groups = group > 0 ? k / group : 1, g = group > 0 ? group : k;
        var w = new float[(long)n * k];
        Parallel.For(0, n, row =>
        {
            for (int col = 0; col < k; col++)
            {
                int code = bits == 8 ? q[(long)row * k + col] : (q[((long)row * k + col) / 2] >> (col % 2 * 4)) & 0xF;
                int gi = row * groups + col / g;
                w[(long)row * k + col] = (code - zeros[gi]) * scales[gi];
            }
        });
        return w;
    }

    private byte[] Bytes(string key)
    {
        if (!_byteWeights.TryGetValue(key, out byte[]? b))
        {
            b = weights.ReadBytes(key);
            GraphWeight w = Graph.Weights.First(x => x.Key == key);
            CheckStored(w, b.Length);
            if (w.Slice is { } slice) b = slice.ApplyBytes(b, 1);
            _byteWeights[key] = b;
        }
        return b;
    }

    private static float[] Transpose(float[] kn, int k, int n)
    {
        var nk = new float[kn.Length];
        for (int i = 0; i < k; i++)
            for (int j = 0; j < n; j++) nk[j * k + i] = kn[i * n + j];
        return nk;
    }

    /// <summary>y[r, j] = x[r, :] · w[j, :] + b[j].</summary>
    private static float[] Dense(float[] x, int k, float[] w, int n, float[]? bias)
    {
        int rows = x.Length / k;
        var y = new float[rows * n];
        // Blocks of output columns per task: one column is far too little work to schedule alone.
        Parallel.ForEach(System.Collections.Concurrent.Partitioner.Create(0, n, Math.Max(64, n / (4 * Environment.ProcessorCount))), range =>
        {
            for (int j = range.Item1; j < range.Item2; j++)
            {
                var wr = w.AsSpan(j * k, k);
                for (int r = 0; r < rows; r++) y[r * n + j] = TensorPrimitives.Dot(x.AsSpan(r * k, k), wr) + (bias?[j] ?? 0f);
            }
        });
        return y;
    }

    private static long[] Strides(long[] shape)
    {
        var s = new long[shape.Length];
        long acc = 1;
        for (int i = shape.Length - 1; i >= 0; i--) { s[i] = acc; acc *= shape[i]; }
        return s;
    }

    private static float[] Slice(GraphOp op, float[] x, long[] inShape, long[] outShape)
    {
        long[] offset = op.Attr("offset").Ints!, steps = op.Attr("steps").Ints!;
        long[] inStrides = Strides(inShape), outStrides = Strides(outShape);
        var y = new float[outShape.Aggregate(1L, (a, b) => a * b)];
        for (long i = 0; i < y.Length; i++)
        {
            long rest = i, src = 0;
            for (int d = 0; d < outShape.Length; d++)
            {
                long idx = rest / outStrides[d];
                rest %= outStrides[d];
                src += (offset[d] + idx * steps[d]) * inStrides[d];
            }
            y[i] = x[src];
        }
        return y;
    }

    /// <summary>Elementwise op over two operands with numpy broadcasting (or one operand and a constant, for Where).</summary>
    private float[] Binary(GraphOp op, Dictionary<string, float[]> v, long[] outShape, Func<float, float, float> f)
    {
        if (op.Inputs.Count != 2) throw new LlmBuildException(ErrorCodes.GraphUnsupported, $"Piece {Graph.Name}: {op.Kind} with {op.Inputs.Count} operands.");
        var a = Broadcaster(op.Inputs[0], outShape);
        var b = Broadcaster(op.Inputs[1], outShape);
        float[] av = v[op.Inputs[0]], bv = v[op.Inputs[1]];
        var y = new float[outShape.Aggregate(1L, (p, q) => p * q)];
        if (av.Length == y.Length && bv.Length == y.Length)
            for (int i = 0; i < y.Length; i++) y[i] = f(av[i], bv[i]);
        else
            for (long i = 0; i < y.Length; i++) y[i] = f(av[a(i)], bv[b(i)]);
        return y;
    }

    /// <summary>Maps a flat index of the output to the flat index of a broadcast operand.</summary>
    private Func<long, long> Broadcaster(string operand, long[] outShape)
    {
        long[] shape = Shape(operand);
        int pad = outShape.Length - shape.Length;
        long[] inStrides = Strides(shape), outStrides = Strides(outShape);
        return i =>
        {
            long rest = i, src = 0;
            for (int d = 0; d < outShape.Length; d++)
            {
                long idx = rest / outStrides[d];
                rest %= outStrides[d];
                int sd = d - pad;
                if (sd >= 0 && shape[sd] != 1) src += idx * inStrides[sd];
            }
            return src;
        };
    }

    private float[] Where(GraphOp op, Dictionary<string, float[]> v, long[] outShape)
    {
        var cond = Broadcaster(op.Inputs[0], outShape);
        bool xConst = op.BoolOr("x_is_const", false), yConst = op.BoolOr("y_is_const", false);
        float xc = (float)(op.Find("x_const_val")?.Float ?? 0), yc = (float)(op.Find("y_const_val")?.Float ?? 0);
        Func<long, long>? tb = xConst ? null : Broadcaster(op.Inputs[1], outShape);
        Func<long, long>? fb = yConst ? null : Broadcaster(op.Inputs[2], outShape);
        float[] c = v[op.Inputs[0]];
        float[]? t = xConst ? null : v[op.Inputs[1]], f = yConst ? null : v[op.Inputs[2]];
        var y = new float[outShape.Aggregate(1L, (p, q) => p * q)];
        for (long i = 0; i < y.Length; i++)
            y[i] = c[cond(i)] != 0 ? (xConst ? xc : t![tb!(i)]) : (yConst ? yc : f![fb!(i)]);
        return y;
    }

    private float[] Concat(GraphOp op, Dictionary<string, float[]> v, long[] outShape)
    {
        int axis = (int)op.Int("axis");
        if (axis < 0) axis += outShape.Length;
        long outer = outShape.Take(axis).Aggregate(1L, (a, b) => a * b);
        long inner = outShape.Skip(axis + 1).Aggregate(1L, (a, b) => a * b);
        var y = new float[outShape.Aggregate(1L, (a, b) => a * b)];
        long outRow = outShape[axis] * inner, offset = 0;
        foreach (string input in op.Inputs)
        {
            long rows = Shape(input)[axis] * inner;
            float[] x = v[input];
            for (long o = 0; o < outer; o++)
                Array.Copy(x, o * rows, y, o * outRow + offset, rows);
            offset += rows;
        }
        return y;
    }

    /// <summary>
    /// softmax(q·kᵀ·scale + mask)·v per query head, heads sharing kv heads in groups. q [B, Mq, Hq, d],
    /// k/v [B, Mk, Hkv, d] → [B, Mq, Hq·d]. The mask is [B or 1, 1, Mq, Mk] additive; with mask_size ≠ 0 (Dynamic)
    /// the attention is causal instead: key j is visible to query i iff j ≤ i + Mk − Mq.
    /// </summary>
    private float[] Attention(GraphOp op, float[] q, float[] k, float[] v, float[]? mask)
    {
        int batch = (int)op.Int("batch"), mq = (int)op.Int("mq"), mk = (int)op.Int("mk");
        int hq = (int)op.Int("q_head"), hkv = (int)op.Int("kv_head"), d = (int)op.Int("dim");
        float scale = (float)op.Float("scale");
        bool causal = op.IntOr("mask_size", 0) != 0;
        if (q.Length != (long)batch * mq * hq * d || k.Length != (long)batch * mk * hkv * d)
            throw new LlmBuildException(ErrorCodes.GraphBadShape, $"Piece {Graph.Name}: FAttention operands do not match its attributes.");
        bool perBatchMask = mask is not null && mask.Length == (long)batch * mq * mk;
        int group = hq / hkv;
        var y = new float[(long)batch * mq * hq * d];
        Parallel.For(0, batch * hq, bh =>
        {
            int b = bh / hq, head = bh % hq, kvHead = head / group;
            var scores = new float[mk];
            for (int i = 0; i < mq; i++)
            {
                var qv = q.AsSpan(((b * mq + i) * hq + head) * d, d);
                float max = float.NegativeInfinity;
                for (int j = 0; j < mk; j++)
                {
                    float s = TensorPrimitives.Dot(qv, k.AsSpan(((b * mk + j) * hkv + kvHead) * d, d)) * scale;
                    if (causal) { if (j > i + mk - mq) s += -1e9f; }
                    else if (mask is not null) s += mask[(perBatchMask ? b * mq * mk : 0) + i * mk + j];
                    scores[j] = s;
                    max = MathF.Max(max, s);
                }
                float sum = 0;
                for (int j = 0; j < mk; j++) { scores[j] = MathF.Exp(scores[j] - max); sum += scores[j]; }
                var o = y.AsSpan(((b * mq + i) * hq + head) * d, d);
                for (int j = 0; j < mk; j++)
                {
                    float p = scores[j] / sum;
                    var vv = v.AsSpan(((b * mk + j) * hkv + kvHead) * d, d);
                    for (int e = 0; e < d; e++) o[e] += p * vv[e];
                }
            }
        });
        return y;
    }

    /// <summary>Top-K along the last axis, largest first, ties to the lower index; with a kT operand only the first
    /// min(kT, K) values are kept and the rest are −∞ (so softmax gives them zero).</summary>
    private void TopK(GraphOp op, Dictionary<string, float[]> v)
    {
        long[] inShape = Shape(op.Inputs[0]);
        int width = LastAxis(op, inShape, "axis");
        int k = (int)op.Int("K");
        if (!op.BoolOr("largest", true)) throw new LlmBuildException(ErrorCodes.GraphUnsupported, $"Piece {Graph.Name}: TopK with largest=false.");
        int keep = op.Inputs.Count > 1 ? Math.Clamp((int)v[op.Inputs[1]][0], 0, k) : k;
        float[] x = v[op.Inputs[0]];
        int rows = x.Length / width;
        var values = new float[rows * k];
        var indices = new float[rows * k];
        var best = new int[k];
        for (int r = 0; r < rows; r++)
        {
            var row = x.AsSpan(r * width, width);
            // Insertion into a sorted list of the k best: O(width) for the small k the heads use. Only a strictly
            // greater value moves ahead, so ties keep the lower index first.
            int count = 0;
            for (int i = 0; i < width; i++)
            {
                float value = row[i];
                if (count == k && !(value > row[best[k - 1]])) continue;
                int at = Math.Min(count, k - 1);
                while (at > 0 && value > row[best[at - 1]]) { best[at] = best[at - 1]; at--; }
                best[at] = i;
                if (count < k) count++;
            }
            for (int i = 0; i < k; i++)
            {
                values[r * k + i] = i < keep && i < count ? row[best[i]] : float.NegativeInfinity;
                indices[r * k + i] = i < count ? best[i] : 0;
            }
        }
        v[op.Outputs[0]] = values;
        v[op.Outputs[1]] = indices;
    }

    private static float[] Softmax(float[] x, int width)
    {
        var y = new float[x.Length];
        for (int r = 0; r < x.Length / width; r++)
        {
            var row = x.AsSpan(r * width, width);
            float max = TensorPrimitives.Max(row);
            var o = y.AsSpan(r * width, width);
            float sum = 0;
            for (int i = 0; i < width; i++) sum += o[i] = MathF.Exp(row[i] - max);
            for (int i = 0; i < width; i++) o[i] /= sum;
        }
        return y;
    }

    private static float[] CumSum(float[] x, int width)
    {
        var y = new float[x.Length];
        for (int r = 0; r < x.Length / width; r++)
        {
            float acc = 0;
            for (int i = 0; i < width; i++) y[r * width + i] = acc += x[r * width + i];
        }
        return y;
    }

    private float[] GatherElements(GraphOp op, float[] x, long[] xShape, float[] indices, long[] outShape)
    {
        if (xShape.Length != 2 || op.Int("axis") != 1) throw new LlmBuildException(ErrorCodes.GraphUnsupported, $"Piece {Graph.Name}: GatherElements beyond rank 2, axis 1.");
        int width = (int)xShape[1], outWidth = (int)outShape[1];
        var y = new float[indices.Length];
        for (int i = 0; i < y.Length; i++) y[i] = x[i / outWidth * width + CheckedIndex(indices[i], width)];
        return y;
    }

    private float[] ScatterElements(GraphOp op, float[] x, long[] xShape, float[] indices, long[] indexShape, float[] updates)
    {
        if (xShape.Length != 2 || op.Int("axis") != 1) throw new LlmBuildException(ErrorCodes.GraphUnsupported, $"Piece {Graph.Name}: ScatterElements beyond rank 2, axis 1.");
        int width = (int)xShape[1], indexWidth = (int)indexShape[1];
        var y = (float[])x.Clone();
        for (int i = 0; i < indices.Length; i++) y[i / indexWidth * width + CheckedIndex(indices[i], width)] = updates[i];
        return y;
    }

    private float[] ScatterND(float[] x, long[] xShape, float[] indices, long[] indexShape, float[] updates)
    {
        int depth = (int)indexShape[^1];
        long[] strides = Strides(xShape);
        var y = (float[])x.Clone();
        for (int u = 0; u < indices.Length / depth; u++)
        {
            long at = 0;
            for (int d = 0; d < depth; d++) at += CheckedIndex(indices[u * depth + d], (int)xShape[d]) * strides[d];
            long block = strides[depth - 1];
            for (long e = 0; e < block; e++) y[at + e] = updates[u * block + e];
        }
        return y;
    }

    private int CheckedIndex(float value, int bound)
    {
        int i = (int)value;
        if (i < 0 || i >= bound || i != value)
            throw new LlmBuildException(ErrorCodes.GraphBadInput, $"Piece {Graph.Name}: index {value} is outside 0..{bound - 1}.");
        return i;
    }

    /// <summary>gelu with the tanh approximation: ½x(1 + tanh(√(2/π)(x + 0.044715x³))).</summary>
    internal static float GeluTanh(float x) => 0.5f * x * (1f + MathF.Tanh(0.7978845608028654f * (x + 0.044715f * x * x * x)));
}
