using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Models;
using LlmBuild.Core.Plan;

namespace LlmBuild.Core.Graph;

/// <summary>
/// Accumulates one piece's tensors and ops while a builder walks the network; checks that every operand exists and
/// every tensor name is unique, so a built <see cref="PieceGraph"/> is always well formed.
/// </summary>
internal sealed class GraphAssembler(Piece piece)
{
    private readonly List<GraphTensor> _tensors = [];
    private readonly Dictionary<string, GraphTensor> _byName = new(StringComparer.Ordinal);
    private readonly List<string> _inputs = [];
    private readonly List<GraphWeight> _weights = [];
    private readonly List<GraphConstant> _constants = [];
    private readonly List<GraphOp> _ops = [];

    public Piece Piece { get; } = piece;

    public long[] Shape(string tensor) => Get(tensor).Shape;

    public GraphTensor Get(string tensor) => _byName.TryGetValue(tensor, out var t) ? t
        : throw new InvalidOperationException($"Piece {Piece.Name}: tensor '{tensor}' is used before it is defined.");

    public string Input(string name, GraphDType dtype, params long[] shape)
    {
        Define(new GraphTensor(name, dtype, shape));
        _inputs.Add(name);
        return name;
    }

    /// <summary>
    /// Declares an owner weight (once; a second use of the same key must agree). With a slice, the graph tensor is the
    /// slice (its shape) of the stored entry (the slice's source shape).
    /// </summary>
    public string Weight(WeightEntry entry, WeightPart part, string key, GraphDType dtype, long[] shape, WeightSlice? slice = null)
    {
        long[] graphShape = slice?.Shape ?? shape;
        if (slice is not null && !slice.SourceShape.SequenceEqual(shape))
            throw new InvalidOperationException($"Piece {Piece.Name}: weight '{key}' is sliced from [{string.Join(",", slice.SourceShape)}] but stored as [{string.Join(",", shape)}].");
        if (_byName.TryGetValue(key, out var existing))
        {
            var declared = _weights.First(w => w.Key == key);
            if (existing.DType != dtype || !existing.Shape.SequenceEqual(graphShape) || !SameSlice(declared.Slice, slice))
                throw new InvalidOperationException($"Piece {Piece.Name}: weight '{key}' is declared with two types or slices.");
            return key;
        }
        Define(new GraphTensor(key, dtype, graphShape));
        _weights.Add(new GraphWeight(key, dtype, graphShape, entry, part, slice));
        return key;
    }

    private static bool SameSlice(WeightSlice? a, WeightSlice? b) => a is null ? b is null
        : b is not null && a.Axis == b.Axis && a.Start == b.Start && a.Length == b.Length && a.SourceShape.SequenceEqual(b.SourceShape);

    public string Constant(string key, GraphDType dtype, long[] shape, float[] data)
    {
        if (data.Length != shape.Aggregate(1L, (a, b) => a * b))
            throw new InvalidOperationException($"Constant '{key}' has {data.Length} values for shape [{string.Join(",", shape)}].");
        Define(new GraphTensor(key, dtype, shape));
        _constants.Add(new GraphConstant(key, dtype, shape, data));
        return key;
    }

    /// <summary>Adds a single-result f32 op and returns its result name.</summary>
    public string Op(string kind, string[] inputs, string output, long[] shape, params OpAttr[] attrs) =>
        Op(kind, inputs, [(output, GraphDType.F32, shape)], attrs)[0];

    public string[] Op(string kind, string[] inputs, (string Name, GraphDType DType, long[] Shape)[] outputs, params OpAttr[] attrs)
    {
        foreach (string input in inputs)
            if (input.Length > 0) Get(input);
        foreach (var (name, dtype, shape) in outputs) Define(new GraphTensor(name, dtype, shape));
        var sorted = attrs.OrderBy(a => a.Name, StringComparer.Ordinal).ToArray();
        _ops.Add(new GraphOp(kind, inputs, outputs.Select(o => o.Name).ToArray(), sorted));
        return outputs.Select(o => o.Name).ToArray();
    }

    public PieceGraph Build(string platform, bool dynamic, params string[] outputs) => Build(platform, dynamic, null, outputs);

    public PieceGraph Build(string platform, bool dynamic, GraphShard? shard, params string[] outputs)
    {
        foreach (string o in outputs) Get(o);
        return new PieceGraph(Piece, platform, dynamic, _tensors, _inputs, outputs, _weights, _constants, _ops, shard);
    }

    private void Define(GraphTensor tensor)
    {
        if (!_byName.TryAdd(tensor.Name, tensor))
            throw new LlmBuildException(ErrorCodes.GraphBadShape,
                $"Piece {Piece.Name}: the tensor name '{tensor.Name}' is used twice. Two weights or ops would share one MLIR location name.");
        _tensors.Add(tensor);
    }
}
