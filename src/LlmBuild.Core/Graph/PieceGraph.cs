using System.Globalization;
using LlmBuild.Core.Models;
using LlmBuild.Core.Plan;

namespace LlmBuild.Core.Graph;

/// <summary>A named tensor of a piece graph. Shapes are static.</summary>
public sealed record GraphTensor(string Name, GraphDType DType, long[] Shape)
{
    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);
    public override string ToString() => $"{Name}: {DType.MlirName()}[{string.Join(",", Shape)}]";
}

/// <summary>How an attribute value is typed in MLIR (the TopOps.td attribute class).</summary>
public enum AttrKind { Bool, I64, I32, SI32, F64, Str, I64Array, F64Array }

/// <summary>One op attribute. Exactly one value field is meaningful, chosen by <see cref="Kind"/>.</summary>
public sealed record OpAttr(string Name, AttrKind Kind, bool Bool = false, long Int = 0, double Float = 0, string? Str = null,
    long[]? Ints = null, double[]? Floats = null)
{
    public static OpAttr Of(string name, bool value) => new(name, AttrKind.Bool, Bool: value);
    public static OpAttr I64(string name, long value) => new(name, AttrKind.I64, Int: value);
    public static OpAttr I32(string name, int value) => new(name, AttrKind.I32, Int: value);
    public static OpAttr SI32(string name, int value) => new(name, AttrKind.SI32, Int: value);
    public static OpAttr F64(string name, double value) => new(name, AttrKind.F64, Float: value);
    public static OpAttr String(string name, string value) => new(name, AttrKind.Str, Str: value);
    public static OpAttr I64s(string name, params long[] values) => new(name, AttrKind.I64Array, Ints: values);
    public static OpAttr F64s(string name, params double[] values) => new(name, AttrKind.F64Array, Floats: values);

    public override string ToString() => Kind switch
    {
        AttrKind.Bool => $"{Name}={Bool}",
        AttrKind.I64 or AttrKind.I32 or AttrKind.SI32 => $"{Name}={Int}",
        AttrKind.F64 => $"{Name}={Float.ToString("R", CultureInfo.InvariantCulture)}",
        AttrKind.Str => $"{Name}=\"{Str}\"",
        AttrKind.I64Array => $"{Name}=[{string.Join(",", Ints!)}]",
        _ => $"{Name}=[{string.Join(",", Floats!.Select(f => f.ToString("R", CultureInfo.InvariantCulture)))}]",
    };
}

/// <summary>
/// One operation: a top-dialect op name (e.g. <c>top.MatMul</c>), its operands and results by tensor name, and its
/// attributes sorted by name. An empty operand name is TPU-MLIR's <c>top.None</c> (for AnyTensorOrNone operands);
/// an absent Optional operand (Reshape's shapeT, TopK's kT) is simply left out.
/// </summary>
public sealed record GraphOp(string Kind, IReadOnlyList<string> Inputs, IReadOnlyList<string> Outputs, IReadOnlyList<OpAttr> Attributes)
{
    public OpAttr? Find(string name) => Attributes.FirstOrDefault(a => a.Name == name);
    public OpAttr Attr(string name) => Find(name) ?? throw new InvalidOperationException($"{Kind} ({Outputs[0]}) has no attribute '{name}'.");
    public long Int(string name) => Attr(name).Int;
    public long IntOr(string name, long fallback) => Find(name)?.Int ?? fallback;
    public double Float(string name) => Attr(name).Float;
    public bool BoolOr(string name, bool fallback) => Find(name)?.Bool ?? fallback;
}

/// <summary>Which part of a stored weight entry a graph weight is.</summary>
public enum WeightPart { Value, QWeight, Scales, QZeros, InputPermutation }

/// <summary>
/// A tensor the piece reads from its weight owner's npz (key = npz key = top.Weight location name). With a
/// <see cref="Slice"/> (tensor-parallel shards) the npz entry has the slice's source shape and the graph uses only
/// the slice, whose shape is <see cref="Shape"/>. <see cref="Entry"/> is the owner's entry it comes from, null in a
/// graph read back from MLIR (a module names its weights, not their roles).
/// </summary>
public sealed record GraphWeight(string Key, GraphDType DType, long[] Shape, WeightEntry? Entry, WeightPart Part, WeightSlice? Slice = null)
{
    /// <summary>The shape of the stored npz entry (the slice's source, or <see cref="Shape"/>).</summary>
    public long[] StoredShape => Slice?.SourceShape ?? Shape;
}

/// <summary>
/// A contiguous range [Start, Start + Length) along one axis of a stored row-major tensor of shape
/// <see cref="SourceShape"/>: what one device reads of a weight split for tensor parallelism.
/// </summary>
public sealed record WeightSlice(int Axis, long Start, long Length, long[] SourceShape)
{
    public long[] Shape
    {
        get
        {
            var shape = (long[])SourceShape.Clone();
            shape[Axis] = Length;
            return shape;
        }
    }

    private (long Outer, long Extent, long Inner) Layout()
    {
        if (Axis < 0 || Axis >= SourceShape.Length || Start < 0 || Length <= 0 || Start + Length > SourceShape[Axis])
            throw new InvalidOperationException($"Slice [{Start}, +{Length}) of axis {Axis} does not fit shape [{string.Join(",", SourceShape)}].");
        long outer = 1, inner = 1;
        for (int i = 0; i < Axis; i++) outer *= SourceShape[i];
        for (int i = Axis + 1; i < SourceShape.Length; i++) inner *= SourceShape[i];
        return (outer, SourceShape[Axis], inner);
    }

    /// <summary>Copies the slice out of the whole tensor's elements (any element type, row-major).</summary>
    public T[] Apply<T>(ReadOnlySpan<T> source)
    {
        var (outer, extent, inner) = Layout();
        if (source.Length != outer * extent * inner)
            throw new InvalidOperationException($"A tensor of shape [{string.Join(",", SourceShape)}] has {outer * extent * inner} elements, not {source.Length}.");
        long run = Length * inner;
        var result = new T[outer * run];
        for (long o = 0; o < outer; o++)
            source.Slice((int)((o * extent + Start) * inner), (int)run).CopyTo(result.AsSpan((int)(o * run)));
        return result;
    }

    /// <summary>
    /// The slice as byte runs of the whole tensor: the first run's offset, the run length, the distance between runs'
    /// starts and their count (what <see cref="ApplyBytes"/> copies, without copying).
    /// </summary>
    public (long First, long Run, long Stride, long Count) ByteRuns(int elementSize)
    {
        var (outer, extent, inner) = Layout();
        long rowBytes = inner * elementSize;
        return (Start * rowBytes, Length * rowBytes, extent * rowBytes, outer);
    }

    /// <summary>Copies the slice out of a whole tensor's raw bytes, <paramref name="elementSize"/> bytes per element.</summary>
    public byte[] ApplyBytes(ReadOnlySpan<byte> source, int elementSize)
    {
        var (outer, extent, inner) = Layout();
        long rowBytes = inner * elementSize, run = Length * rowBytes;
        if (source.Length != outer * extent * rowBytes)
            throw new InvalidOperationException($"A tensor of shape [{string.Join(",", SourceShape)}] has {outer * extent * rowBytes} bytes, not {source.Length}.");
        var result = new byte[outer * run];
        for (long o = 0; o < outer; o++)
            source.Slice((int)((o * extent + Start) * rowBytes), (int)run).CopyTo(result.AsSpan((int)(o * run)));
        return result;
    }
}

/// <summary>Which sub-net of a tensor-parallel block a graph is (see <see cref="TensorParallel"/>).</summary>
public sealed record GraphShard(int Step, int Device, int Devices);

/// <summary>
/// A tensor that depends on options rather than on the checkpoint (RoPE tables, the Dynamic mask, zero LoRA weights,
/// sampling constants). It is written to the piece's own npz next to the owner weights it uses.
/// <see cref="Data"/> holds the values as f32; the stored dtype is <see cref="DType"/>.
/// </summary>
public sealed record GraphConstant(string Key, GraphDType DType, long[] Shape, float[] Data);

/// <summary>
/// The graph of one net of the built model, built once by <see cref="PieceGraphBuilder"/> and consumed by the MLIR
/// writer, the interpreter and the codegen. Inputs and outputs are in net-contract order. Every op operand is a graph
/// input, a weight key, a constant key or an earlier op's output; ops are in execution order.
/// </summary>
public sealed class PieceGraph
{
    private readonly Dictionary<string, GraphTensor> _tensors;

    public PieceGraph(Piece piece, string platform, bool dynamic, IReadOnlyList<GraphTensor> tensors,
        IReadOnlyList<string> inputs, IReadOnlyList<string> outputs, IReadOnlyList<GraphWeight> weights,
        IReadOnlyList<GraphConstant> constants, IReadOnlyList<GraphOp> ops, GraphShard? shard = null)
    {
        Piece = piece;
        Shard = shard;
        Platform = platform;
        Dynamic = dynamic;
        _tensors = new Dictionary<string, GraphTensor>(StringComparer.Ordinal);
        foreach (var t in tensors)
            if (!_tensors.TryAdd(t.Name, t)) throw new ArgumentException($"Tensor '{t.Name}' is defined twice in piece {piece.Name}.");
        TensorList = tensors;
        Inputs = inputs;
        Outputs = outputs;
        Weights = weights;
        Constants = constants;
        Ops = ops;
    }

    public Piece Piece { get; }
    /// <summary>Set for one sub-net of a tensor-parallel block; null for a whole piece.</summary>
    public GraphShard? Shard { get; }
    /// <summary>The net's name: the piece's, or the sub-net's (block_0_s1_d0) for a shard.</summary>
    public string Name => Shard is { } s ? TensorParallel.NetName(Piece.Name, s.Step, s.Device) : Piece.Name;
    /// <summary>module.platform: "LLM" or "LLM_QUANTIZED".</summary>
    public string Platform { get; }
    /// <summary>Built for dynamic prefill lengths (module.top_run_mode = "DYNAMIC").</summary>
    public bool Dynamic { get; }
    /// <summary>Every tensor in definition order: inputs, weights, constants, then op results.</summary>
    public IReadOnlyList<GraphTensor> TensorList { get; }
    public IReadOnlyList<string> Inputs { get; }
    public IReadOnlyList<string> Outputs { get; }
    public IReadOnlyList<GraphWeight> Weights { get; }
    public IReadOnlyList<GraphConstant> Constants { get; }
    public IReadOnlyList<GraphOp> Ops { get; }

    public GraphTensor Tensor(string name) => _tensors.TryGetValue(name, out var t) ? t
        : throw new KeyNotFoundException($"Piece {Name} has no tensor '{name}'.");

    public bool HasTensor(string name) => _tensors.ContainsKey(name);

    public IEnumerable<GraphTensor> InputTensors => Inputs.Select(Tensor);
    public IEnumerable<GraphTensor> OutputTensors => Outputs.Select(Tensor);

    /// <summary>The npz keys the piece's own weight file must hold: the owner weights it uses, then its constants.</summary>
    public IEnumerable<string> WeightFileKeys => Weights.Select(w => w.Key).Concat(Constants.Select(c => c.Key));
}
