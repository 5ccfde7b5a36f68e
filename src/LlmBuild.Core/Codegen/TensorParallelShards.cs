using System.Globalization;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Graph;
using LlmBuild.Core.Models;
using LlmBuild.Core.Plan;

namespace LlmBuild.Core.Codegen;

/// <summary>
/// Splits a whole block's graph — as read from its MLIR module — into the 3·D sub-nets of <see cref="TensorParallel"/>,
/// the way TPU-MLIR's deploy step distributes a module with --num_device: by the graph's structure, not by a second
/// description of the model. The block must have the shape every family's block has: one top.FAttention whose result
/// feeds the row-parallel o_proj linear, a residual add of input_states and o_proj, then a row-parallel down_proj
/// linear whose result is added to that residual (optionally followed by more ops, the final norm). Every other linear
/// before o_proj or down_proj is column-parallel; the head and column axes they split are followed through the ops in
/// between (reshape, norms, RoPE, concat, attention), rewriting shapes and the attributes that carry them.
/// Anything the split cannot follow is an LLMB0317 error.
/// </summary>
public static class TensorParallelShards
{
    public static PieceGraph Shard(PieceGraph whole, int step, int device, int devices)
    {
        if (step is < 0 or >= TensorParallel.Steps) throw new ArgumentOutOfRangeException(nameof(step), step, $"steps are 0..{TensorParallel.Steps - 1}");
        if (devices < 2 || device < 0 || device >= devices) throw new ArgumentOutOfRangeException(nameof(device), device, $"devices are 0..{devices - 1}");
        var layout = Layout.Find(whole);
        return new Splitter(whole, layout, step, device, devices).Run();
    }

    private static LlmBuildException CannotSplit(PieceGraph g, string why) =>
        new(ErrorCodes.MlirCannotSplit, $"Piece {g.Name}: cannot split the block across devices: {why}. Build it with NumDevice=1, or export the block " +
            "in the structure the exporter writes (attention → o_proj → residual add → MLP → down_proj → add).");

    private static bool IsLinear(GraphOp op) => op.Kind is "top.MatMul" or "top.A16MatMul";

    /// <summary>The op indices that divide the block into the three steps.</summary>
    private sealed record Layout(int OProj, int Residual, int DownProj, int Output, string Input)
    {
        public static Layout Find(PieceGraph g)
        {
            var ops = g.Ops;
            int attention = -1;
            for (int i = 0; i < ops.Count; i++)
                if (ops[i].Kind == "top.FAttention")
                    attention = attention < 0 ? i : throw CannotSplit(g, "it has more than one top.FAttention");
            if (attention < 0) throw CannotSplit(g, "it has no top.FAttention");
            int oProj = Consumer(g, ops[attention].Outputs[0], attention, "the attention result");
            if (!IsLinear(ops[oProj]) || ops[oProj].Inputs[0] != ops[attention].Outputs[0])
                throw CannotSplit(g, "the attention result does not feed a linear (o_proj)");
            int residual = Consumer(g, ops[oProj].Outputs[0], oProj, "o_proj's result");
            GraphOp add = ops[residual];
            if (add.Kind != "top.Add" || add.Inputs.Count != 2 || add.Inputs[1] != ops[oProj].Outputs[0] || !g.Inputs.Contains(add.Inputs[0]))
                throw CannotSplit(g, "o_proj's result is not added to a net input (the residual)");
            int output = -1, downProj = -1;
            for (int i = residual + 1; i < ops.Count && output < 0; i++)
                if (ops[i].Kind == "top.Add" && ops[i].Inputs.Count == 2 && ops[i].Inputs[0] == add.Outputs[0])
                {
                    output = i;
                    downProj = ops.Take(i).ToList().FindIndex(o => o.Outputs.Contains(ops[i].Inputs[1]));
                }
            if (output < 0 || downProj <= residual || !IsLinear(ops[downProj]))
                throw CannotSplit(g, "the residual is not added to the result of a linear (down_proj) after it");
            for (int i = residual + 1; i < output; i++)
                if (ops[i].Inputs.Contains(add.Inputs[0]))
                    throw CannotSplit(g, $"{ops[i].Kind} ({ops[i].Outputs[0]}) in the MLP reads the block input");
            return new Layout(oProj, residual, downProj, output, add.Inputs[0]);
        }

        private static int Consumer(PieceGraph g, string tensor, int after, string what)
        {
            var users = Enumerable.Range(after + 1, g.Ops.Count - after - 1).Where(i => g.Ops[i].Inputs.Contains(tensor)).ToList();
            if (users.Count != 1 || g.Outputs.Contains(tensor)) throw CannotSplit(g, $"{what} ({tensor}) is used by {users.Count} ops, not one");
            return users[0];
        }
    }

    /// <summary>Builds one sub-net: the ops of its step, with every split tensor's shape divided along its split axis.</summary>
    private sealed class Splitter(PieceGraph whole, Layout layout, int step, int device, int devices)
    {
        private readonly GraphAssembler _g = new(whole.Piece);
        /// <summary>The axis along which a tensor of this sub-net holds only the device's share.</summary>
        private readonly Dictionary<string, int> _splitAxis = new(StringComparer.Ordinal);
        private readonly Dictionary<string, string> _renamed = new(StringComparer.Ordinal);

        private long[] States => whole.Tensor(layout.Input).Shape;

        public PieceGraph Run()
        {
            var shard = new GraphShard(step, device, devices);
            IReadOnlyList<GraphOp> ops = whole.Ops;
            switch (step)
            {
                case 0:
                {
                    // The contract inputs, each device holding its kv heads of the history.
                    foreach (string name in whole.Inputs)
                    {
                        GraphTensor t = whole.Tensor(name);
                        bool history = name is "history_k" or "history_v";
                        if (history && t.Shape.Length != 4) throw CannotSplit(whole, $"{name} is not [batch, rows, kv heads, head dim]");
                        Input(name, t.DType, history ? Divided(t.Shape, 2) : t.Shape);
                        if (history) _splitAxis[name] = 2;
                    }
                    for (int i = 0; i < layout.OProj; i++) Copy(ops[i]);
                    string partial = TensorParallel.AttnPartial(device);
                    RowParallel(ops[layout.OProj], partial);
                    var outputs = new List<string> { partial };
                    outputs.AddRange(whole.Outputs.Where(_g.Has));
                    return Build(shard, outputs);
                }
                case 1:
                {
                    string x = Input(layout.Input, GraphDType.F32, States);
                    var addends = Enumerable.Range(0, devices).Select(j => Input(TensorParallel.AttnPartial(j), GraphDType.F32, States)).ToList();
                    // The row-parallel o_proj's bias is added once, after the partial sums.
                    string bias = Bias(ops[layout.OProj]);
                    if (bias.Length > 0) addends.Add(Use(bias));
                    string residual = TensorParallel.Residual(device);
                    Sum(x, addends, ops[layout.OProj].Outputs[0], residual);
                    _renamed[ops[layout.Residual].Outputs[0]] = residual;
                    for (int i = layout.Residual + 1; i < layout.DownProj; i++) Copy(ops[i]);
                    string partial = TensorParallel.MlpPartial(device);
                    RowParallel(ops[layout.DownProj], partial);
                    if (layout.DownProj + 1 < layout.Output)
                        throw CannotSplit(whole, $"{ops[layout.DownProj + 1].Kind} ({ops[layout.DownProj + 1].Outputs[0]}) lies between down_proj and the residual add");
                    return Build(shard, [residual, partial]);
                }
                default:
                {
                    string residual = Input(TensorParallel.Residual(device), GraphDType.F32, States);
                    var partials = Enumerable.Range(0, devices).Select(j => Input(TensorParallel.MlpPartial(j), GraphDType.F32, States)).ToList();
                    // The row-parallel down_proj's bias (llama's mlp_bias) is added once, after the partial sums.
                    string downBias = Bias(ops[layout.DownProj]);
                    if (downBias.Length > 0) partials.Add(Use(downBias));
                    GraphOp output = ops[layout.Output];
                    Sum(residual, partials, ops[layout.DownProj].Outputs[0], output.Outputs[0]);
                    for (int i = layout.Output + 1; i < ops.Count; i++) Copy(ops[i]);
                    return Build(shard, [whole.Outputs[0]]);
                }
            }
        }

        private PieceGraph Build(GraphShard shard, IReadOnlyList<string> outputs)
        {
            foreach (string o in outputs)
                if (!_g.Has(o)) throw CannotSplit(whole, $"step {step} does not compute output {o}");
            return _g.Build(whole.Platform, whole.Dynamic, shard, outputs.ToArray());
        }

        private long[] Divided(long[] shape, int axis)
        {
            if (shape[axis] % devices != 0) throw CannotSplit(whole, $"dimension {shape[axis]} does not divide by NumDevice={devices}");
            var result = (long[])shape.Clone();
            result[axis] /= devices;
            return result;
        }

        private string Input(string name, GraphDType dtype, long[] shape) => _g.Input(name, dtype, shape);

        /// <summary>The sub-net's name for a whole-graph operand, declaring a weight or constant at its first use.</summary>
        private string Use(string name, WeightSlice? slice = null)
        {
            if (name.Length == 0) return name;
            if (_renamed.TryGetValue(name, out string? renamed)) return renamed;
            if (whole.Weights.FirstOrDefault(w => w.Key == name) is { } weight)
                return _g.Weight(weight.Entry, weight.Part, name, weight.DType, weight.StoredShape, slice);
            if (_g.Has(name)) return name;
            if (whole.Constants.FirstOrDefault(c => c.Key == name) is { } constant) return _g.Constant(constant);
            throw CannotSplit(whole, $"tensor {name} is used by step {step} but computed in another step");
        }

        private int? SplitOf(string name) => _splitAxis.TryGetValue(_renamed.GetValueOrDefault(name, name), out int axis) ? axis : null;

        private void Emit(GraphOp op, IReadOnlyList<string> inputs, IReadOnlyList<GraphTensor> outputs, IEnumerable<OpAttr> attributes) =>
            _g.Op(op.Kind, inputs.ToArray(), outputs.Select(t => (t.Name, t.DType, t.Shape)).ToArray(), attributes.ToArray());

        /// <summary>first + addends[0] + … left to right; the last add is named <paramref name="name"/>, the others prefix.sum{i}.</summary>
        private void Sum(string first, IReadOnlyList<string> addends, string prefix, string name)
        {
            string acc = first;
            for (int i = 0; i < addends.Count; i++)
            {
                string result = i == addends.Count - 1 ? name : string.Create(CultureInfo.InvariantCulture, $"{prefix}.sum{i}");
                acc = _g.Op("top.Add", [acc, addends[i]], result, States);
            }
        }

        private static string Bias(GraphOp linear) => linear.Kind == "top.MatMul"
            ? linear.Inputs.Count > 2 ? linear.Inputs[2] : ""
            : linear.Inputs.Count > 4 ? linear.Inputs[4] : "";

        /// <summary>o_proj or down_proj: the device's input columns of the weight, no bias, the partial sum named <paramref name="name"/>.</summary>
        private void RowParallel(GraphOp op, string name)
        {
            if (SplitOf(op.Inputs[0]) is not { } axis || axis != whole.Tensor(op.Inputs[0]).Shape.Length - 1)
                throw CannotSplit(whole, $"{op.Outputs[0]}'s input is not split along its last axis");
            var inputs = new List<string> { Use(op.Inputs[0]) };
            foreach (var (weight, columns) in LinearWeights(op))
                inputs.Add(Use(weight, columns is null ? null : Slice(weight, 1, columns.Value)));
            // The bias operand stays, as None: the caller adds the bias once after the reduce.
            if (op.Inputs.Count > inputs.Count) inputs.Add("");
            for (int i = inputs.Count; i < op.Inputs.Count; i++) inputs.Add(Use(op.Inputs[i]));
            Emit(op, inputs, [new GraphTensor(name, GraphDType.F32, whole.Tensor(op.Outputs[0]).Shape)], op.Attributes);
        }

        /// <summary>A linear's weight operands and the total columns each splits along K (null: kept whole, per-channel scales).</summary>
        private IEnumerable<(string Weight, long? Columns)> LinearWeights(GraphOp op)
        {
            if (!op.BoolOr("right_transpose", false)) throw CannotSplit(whole, $"{op.Outputs[0]} is not a right-transposed [N, K] linear");
            string w = op.Inputs[1];
            if (op.Kind == "top.MatMul")
            {
                yield return (w, whole.Tensor(w).Shape[^1]);
                yield break;
            }
            long group = op.Int("q_group_size");
            yield return (w, whole.Tensor(w).Shape[^1]);
            yield return (op.Inputs[2], group > 0 ? whole.Tensor(op.Inputs[2]).Shape[^1] : null);
            yield return (op.Inputs[3], group > 0 ? whole.Tensor(op.Inputs[3]).Shape[^1] : null);
        }

        private WeightSlice Slice(string weight, int axis, long total)
        {
            long[] stored = whole.Tensor(weight).Shape;
            if (axis >= stored.Length || stored[axis] != total) throw CannotSplit(whole, $"weight {weight} has no axis {axis} of {total}");
            var (start, count) = TensorParallel.Range(total, device, devices);
            return new WeightSlice(axis, start, count, stored);
        }

        /// <summary>Copies an op of the step, following the split axis from its operands to its results.</summary>
        private void Copy(GraphOp op)
        {
            var split = op.Inputs.Select(n => n.Length == 0 ? null : SplitOf(n)).ToArray();
            if (IsLinear(op) && whole.Weights.Any(w => w.Key == op.Inputs[1]))
            {
                if (split[0] is not null) throw CannotSplit(whole, $"linear {op.Outputs[0]} reads a split input but is not o_proj or down_proj");
                ColumnParallel(op);
                return;
            }
            if (split.All(s => s is null))
            {
                Emit(op, op.Inputs.Select(n => Use(n)).ToArray(), op.Outputs.Select(whole.Tensor).ToArray(), op.Attributes);
                return;
            }
            GraphTensor result = whole.Tensor(op.Outputs[0]);
            int rank = result.Shape.Length;
            // The split axis of the result, counted from the right as numpy broadcasting aligns operands.
            int? fromRight = null;
            for (int i = 0; i < op.Inputs.Count; i++)
            {
                if (split[i] is not { } a) continue;
                int r = whole.Tensor(op.Inputs[i]).Shape.Length - a;
                if (fromRight is not null && fromRight != r && op.Kind is not ("top.Reshape" or "top.FAttention"))
                    throw CannotSplit(whole, $"{op.Kind} ({op.Outputs[0]}) reads operands split along different axes");
                fromRight ??= r;
            }
            int axis = rank - fromRight!.Value;
            var attributes = op.Attributes.ToList();
            switch (op.Kind)
            {
                case "top.Add" or "top.Sub" or "top.Mul" or "top.Div" or "top.MulConst" or "top.SiLU" or "top.RMSNorm" or "top.Slice" or "top.Concat":
                {
                    if (op.Outputs.Count != 1 || axis < 0) throw CannotSplit(whole, $"{op.Kind} ({op.Outputs[0]}) has an unexpected shape");
                    for (int i = 0; i < op.Inputs.Count; i++)
                    {
                        if (op.Inputs[i].Length == 0 || split[i] is not null) continue;
                        long[] s = whole.Tensor(op.Inputs[i]).Shape;
                        int j = s.Length - (rank - axis);
                        bool broadcast = j < 0 || s[j] == 1;
                        bool normGamma = op.Kind == "top.RMSNorm" && i == 1;
                        if (!broadcast && !normGamma)
                            throw CannotSplit(whole, $"{op.Kind} ({op.Outputs[0]}) combines a split operand with whole operand {op.Inputs[i]}");
                        if (op.Kind == "top.Concat") throw CannotSplit(whole, $"top.Concat ({op.Outputs[0]}) joins split and whole operands");
                    }
                    if (op.Kind == "top.RMSNorm" && axis == rank - 1) throw CannotSplit(whole, $"top.RMSNorm ({op.Outputs[0]}) normalizes over the split axis");
                    if (op.Kind == "top.Concat" && Normalize(op.Int("axis"), rank) == axis) throw CannotSplit(whole, $"top.Concat ({op.Outputs[0]}) joins along the split axis");
                    if (op.Kind == "top.Slice")
                    {
                        long[] offset = op.Attr("offset").Ints!, steps = op.Attr("steps").Ints!, ends = op.Attr("ends").Ints!;
                        long extent = whole.Tensor(op.Inputs[0]).Shape[axis];
                        if (offset.Length != rank || steps.Length != rank || ends.Length != rank || offset[axis] != 0 || steps[axis] != 1 || ends[axis] != extent
                            || result.Shape[axis] != extent)
                            throw CannotSplit(whole, $"top.Slice ({op.Outputs[0]}) slices the split axis");
                        attributes = Replace(attributes, OpAttr.I64s("ends", Divided(ends, axis)));
                    }
                    break;
                }
                case "top.Reshape":
                {
                    // [b, l, h·d] → [b, l, h, d]: the split axis maps to the first result axis after the same leading elements.
                    long[] input = whole.Tensor(op.Inputs[0]).Shape;
                    int inAxis = input.Length - fromRight.Value;
                    long leading = input[..inAxis].Aggregate(1L, (p, d) => p * d);
                    axis = -1;
                    long product = 1;
                    for (int j = 0; j < rank && product <= leading; j++)
                    {
                        if (product == leading && result.Shape[j] != 1) { axis = j; break; }
                        product *= result.Shape[j];
                    }
                    if (axis < 0 || input[inAxis] % result.Shape[axis] != 0)
                        throw CannotSplit(whole, $"top.Reshape ({op.Outputs[0]}) moves the split axis");
                    if (op.Find("shape") is { } shapeAttr)
                    {
                        if (!shapeAttr.Ints!.SequenceEqual(result.Shape)) throw CannotSplit(whole, $"top.Reshape ({op.Outputs[0]})'s shape attribute is not its result shape");
                        attributes = Replace(attributes, OpAttr.I64s("shape", Divided(result.Shape, axis)));
                    }
                    break;
                }
                case "top.FAttention":
                {
                    // queries, keys, values split by heads ([b, l, heads, d] axis 2); the result's last axis is heads·d.
                    for (int i = 0; i < 3; i++)
                        if (split[i] != 2 || whole.Tensor(op.Inputs[i]).Shape.Length != 4)
                            throw CannotSplit(whole, $"top.FAttention ({op.Outputs[0]}) operand {i} is not split by heads");
                    if (op.Inputs.Count > 3 && op.Inputs[3].Length > 0 && split[3] is not null) throw CannotSplit(whole, "the attention mask is split");
                    axis = rank - 1;
                    attributes = Replace(attributes, OpAttr.I64("q_head", Share(op.Int("q_head"))));
                    attributes = Replace(attributes, OpAttr.I64("kv_head", Share(op.Int("kv_head"))));
                    break;
                }
                default:
                    throw CannotSplit(whole, $"{op.Kind} ({op.Outputs[0]}) reads a split tensor and the split cannot follow it");
            }
            var outputs = new GraphTensor[] { result with { Shape = Divided(result.Shape, axis) } };
            Emit(op, op.Inputs.Select(n => Use(n)).ToArray(), outputs, attributes);
            _splitAxis[result.Name] = axis;
        }

        /// <summary>q/k/v or gate/up: the device's output rows of the weight (and bias); the result's last axis is split.</summary>
        private void ColumnParallel(GraphOp op)
        {
            if (!op.BoolOr("right_transpose", false)) throw CannotSplit(whole, $"{op.Outputs[0]} is not a right-transposed [N, K] linear");
            long n = whole.Tensor(op.Inputs[1]).Shape[0];
            var inputs = new List<string> { Use(op.Inputs[0]) };
            int weightCount = op.Kind == "top.MatMul" ? 1 : 3;
            for (int i = 1; i <= weightCount; i++) inputs.Add(Use(op.Inputs[i], Slice(op.Inputs[i], 0, n)));
            if (op.Inputs.Count > weightCount + 1)
            {
                string bias = op.Inputs[weightCount + 1];
                inputs.Add(bias.Length == 0 ? "" : Use(bias, Slice(bias, 0, n)));
            }
            for (int i = weightCount + 2; i < op.Inputs.Count; i++) inputs.Add(Use(op.Inputs[i]));
            GraphTensor result = whole.Tensor(op.Outputs[0]);
            Emit(op, inputs, [result with { Shape = Divided(result.Shape, result.Shape.Length - 1) }], op.Attributes);
            _splitAxis[result.Name] = result.Shape.Length - 1;
        }

        private long Share(long total) => total % devices == 0 ? total / devices
            : throw CannotSplit(whole, $"{total} heads do not divide by NumDevice={devices}");

        private static int Normalize(long axis, int rank) => (int)(axis < 0 ? axis + rank : axis);

        private static List<OpAttr> Replace(List<OpAttr> attributes, OpAttr value) =>
            attributes.Select(a => a.Name == value.Name ? value : a).ToList();
    }
}
