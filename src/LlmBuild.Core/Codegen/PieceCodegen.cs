using LlmBuild.Core.BModel;
using LlmBuild.Core.Chips;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Graph;
using LlmBuild.Core.Models;
using LlmBuild.Core.Plan;

namespace LlmBuild.Core.Codegen;

/// <summary>One tensor of a piece's weight file: npy descr, shape and raw little-endian bytes.</summary>
public sealed record PieceTensorData(string Descr, long[] Shape, ReadOnlyMemory<byte> Data)
{
    /// <summary>
    /// Where <see cref="Data"/> is stored uncompressed in the weight file (its npz key and entry CRC-32), so a piece
    /// bmodel can reference the bytes instead of copying them; null when they are not stored as they are.
    /// </summary>
    public WeightFileEntry? Source { get; init; }

    /// <summary>
    /// True when <see cref="Data"/> was not read (it is empty): the compiled piece will reference the bytes at
    /// <see cref="Source"/>, so codegen only lays them out and never holds them in memory.
    /// </summary>
    public bool Deferred { get; init; }
}

/// <summary>An uncompressed entry of a piece's weight file: key, CRC-32 of the .npy member and its data length.</summary>
public sealed record WeightFileEntry(string Key, uint Crc32, long DataLength);

/// <summary>
/// Bytes [<see cref="At"/>, …) of a coefficient blob taken from a weight file entry: <see cref="Count"/> runs of
/// <see cref="Run"/> bytes, the first at <see cref="Offset"/> in the entry's data and each <see cref="Stride"/> after
/// the previous one (one run for a whole tensor, one per row for a tensor-parallel column slice).
/// </summary>
public sealed record CoeffSegment(long At, string Key, long Offset, long Run, long Stride, long Count)
{
    public long Length => Run * Count;
}

/// <summary>A net I/O tensor of a compiled piece.</summary>
public sealed record CompiledIo(string Name, BModelDataType DType, long[] Shape, long Offset, long Bytes);

/// <summary>
/// A piece lowered for a chip: the coefficient blob (weights, packed and aligned), the program's constant section,
/// the program, the planned ctx size and the I/O tensors with their offsets in the net's io region.
/// </summary>
public sealed record CompiledPiece(
    string Name, byte[] Coeff, IReadOnlyList<CoeffLocation> CoeffLocations, byte[] Constants, EmuProgram Program,
    long CtxSize, IReadOnlyList<CompiledIo> Inputs, IReadOnlyList<CompiledIo> Outputs, long IoSize)
{
    /// <summary>
    /// Where every weight in <see cref="Coeff"/> comes from in the weight file (the gaps are alignment zeros), or null
    /// when some weight was not read from an uncompressed entry: then the blob can only be copied.
    /// </summary>
    public IReadOnlyList<CoeffSegment>? CoeffSources { get; init; }

    /// <summary>The weight file entries <see cref="CoeffSources"/> reads.</summary>
    public IReadOnlyList<WeightFileEntry> CoeffEntries { get; init; } = [];

    /// <summary>The coefficient blob's length: <see cref="Coeff"/>'s, or the referenced bytes' when their reads were deferred (then Coeff is empty).</summary>
    public long CoeffSize { get; init; }

    /// <summary>The coefficient blob's sha256 when it was computed from the referenced bytes (deferred reads); null: hash <see cref="Coeff"/>.</summary>
    public byte[]? CoeffSha256 { get; init; }
}

/// <summary>
/// The built-in backend: lowers a <see cref="PieceGraph"/> for a chip into an emulator program. Weights go to the
/// coefficient blob in a fixed order (by npz key) so block_i and block_cache_i get byte-identical blobs that the
/// combine stage stores once; option-dependent constants (RoPE tables, masks) go to the program's constant section.
/// Intermediates are f32 in ctx memory, placed by <see cref="MemoryPlanner"/>; net I/O uses the dtypes a board runtime
/// expects (activation dtype for hidden states, masks and KV, i32 for ids and token ids, f32 for logits).
/// </summary>
public static class PieceCodegen
{
    public static CompiledPiece Compile(ResolvedModel model, PieceGraph graph, ChipProfile chip, Func<string, PieceTensorData> read)
    {
        GraphDType activation = GraphDTypes.Activation(model.ActivationDtype);
        if (!chip.ActivationDTypes.Contains(activation))
            throw new LlmBuildException(ErrorCodes.CodegenUnsupported, $"{chip.Name} does not compute in {model.ActivationDtype}; choose a Quantize mode with {string.Join(" or ", chip.ActivationDTypes.Select(t => t.MlirName()))} activations.");
        foreach (int bits in model.Owners.SelectMany(o => o.Entries).Where(e => e.Storage == WeightStorage.Quantized).Select(e => model.SchemeOf(e).Bits).Append(model.Weights.Bits).Distinct())
            if (!chip.WeightBits.Contains(bits))
                throw new LlmBuildException(ErrorCodes.CodegenUnsupported, $"{chip.Name} does not support {bits}-bit weights.");
        if (model.Options.NumCore > chip.MaxCores)
            throw new LlmBuildException(ErrorCodes.CodegenUnsupported, $"NumCore={model.Options.NumCore} but {chip.Name} has {chip.MaxCores} core(s). Set NumCore to at most {chip.MaxCores}.");
        return new Lowering(graph, chip, activation, read).Run();
    }

    /// <summary>The npy descr a graph dtype is stored with in a piece's weight file (bf16 as its 16-bit pattern).</summary>
    public static string NpyDescr(GraphDType dtype) => dtype switch
    {
        GraphDType.F32 => "<f4",
        GraphDType.BF16 => "<u2",
        GraphDType.F16 => "<f2",
        GraphDType.SI32 => "<i4",
        GraphDType.UI8 => "|u1",
        _ => throw new ArgumentOutOfRangeException(nameof(dtype)),
    };

    public static BModelDataType ToBModel(GraphDType dtype) => dtype switch
    {
        GraphDType.F32 => BModelDataType.Float32,
        GraphDType.BF16 => BModelDataType.BFloat16,
        GraphDType.F16 => BModelDataType.Float16,
        GraphDType.SI32 => BModelDataType.Int32,
        GraphDType.UI8 => BModelDataType.UInt8,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype)),
    };

    /// <summary>The device dtype of a net input or output (the board contract; see the class summary).</summary>
    public static BModelDataType IoType(PieceKind kind, GraphTensor t, GraphDType activation, bool isOutput)
    {
        if (t.DType != GraphDType.F32) return ToBModel(t.DType);
        if (isOutput && t.Name is "token_id" or "token_idx") return BModelDataType.Int32;
        bool activationIo = kind switch
        {
            PieceKind.Embedding or PieceKind.EmbeddingCache => isOutput,
            PieceKind.Block or PieceKind.BlockCache or PieceKind.BlockKv or PieceKind.BlockPrompt => true,
            PieceKind.LmHead => !isOutput,
            _ => false,
        };
        return activationIo ? ToBModel(activation) : BModelDataType.Float32;
    }

    /// <summary>A value during lowering: a planned ctx buffer (Buffer ≥ 0) or a fixed place (coeff, const, io).</summary>
    private sealed class Val(Region region, long offset, int buffer, BModelDataType dtype, long[] shape)
    {
        public Region Region { get; } = region;
        public long Offset { get; } = offset;
        public int Buffer { get; } = buffer;
        public BModelDataType DType { get; } = dtype;
        public long[] Shape { get; } = shape;
        public long Count => Shape.Aggregate(1L, (a, b) => a * b);
        public Val Reshaped(long[] shape) => new(Region, Offset, Buffer, DType, shape);
    }

    private sealed record Instr(EmuOp Op, Val[] Inputs, Val[] Outputs, long[] Ints, float[] Floats, string Name);

    private sealed class Lowering(PieceGraph graph, ChipProfile chip, GraphDType activation, Func<string, PieceTensorData> read)
    {
        private readonly Dictionary<string, Val> _values = new(StringComparer.Ordinal);
        private readonly List<long> _bufferSizes = [];
        private readonly List<Instr> _instrs = [];
        private readonly HashSet<int> _probeBuffers = [];
        private readonly List<(string Name, Val Value)> _probes = [];
        private static readonly Val NoneVal = new(Region.None, 0, -1, BModelDataType.Float32, []);

        public CompiledPiece Run()
        {
            var (coeff, locations) = PackWeights();
            byte[] constants = PackConstants();
            var (inputs, outputs, ioSize) = BindIo();
            foreach (GraphOp op in graph.Ops) Lower(op);
            for (int i = 0; i < graph.Outputs.Count; i++)
            {
                Val src = Get(graph.Outputs[i]);
                Val dst = _values["\0out" + i];
                Emit(EmuOp.Convert, [src], [dst], [], [], graph.Outputs[i]);
            }
            if (graph.HasTensor("logits") && _values.TryGetValue("logits", out Val? logits) && logits.Buffer >= 0)
            {
                _probeBuffers.Add(logits.Buffer);
                _probes.Add(("logits", logits));
            }
            var (offsets, ctxSize) = PlanCtx();
            TensorRef Ref(Val v) => v.Region == Region.None ? TensorRef.None
                : new TensorRef(v.Region, v.DType, v.Buffer >= 0 ? offsets[v.Buffer] + v.Offset : v.Offset, v.Shape);
            var program = new EmuProgram(
                _instrs.Select(i => new EmuInstr(i.Op, i.Inputs.Select(Ref).ToArray(), i.Outputs.Select(Ref).ToArray(), i.Ints, i.Floats, i.Name)).ToArray(),
                _probes.Select(p => new EmuProbe(p.Name, Ref(p.Value))).ToArray());
            return new CompiledPiece(graph.Name, coeff, locations, constants, program, ctxSize, inputs, outputs, ioSize)
            {
                CoeffSources = _coeffSources, CoeffEntries = _coeffEntries.Values.ToArray(), CoeffSize = _coeffSize,
            };
        }

        // ------------------------------------------------------------ weights, constants, io

        private List<CoeffSegment>? _coeffSources = [];
        private long _coeffSize;
        private readonly SortedDictionary<string, WeightFileEntry> _coeffEntries = new(StringComparer.Ordinal);

        private (byte[] Coeff, IReadOnlyList<CoeffLocation> Locations) PackWeights()
        {
            // Sorted by key, not by use: the blob must not depend on the piece kind (block_i and block_cache_i share it).
            var weights = graph.Weights.OrderBy(w => w.Key, StringComparer.Ordinal).ToArray();
            var locations = new List<CoeffLocation>();
            var datas = new List<ReadOnlyMemory<byte>>();
            long size = 0;
            bool deferred = false;
            foreach (GraphWeight w in weights)
            {
                PieceTensorData data = ReadChecked(w.Key, w.DType, w.StoredShape);
                deferred |= data.Deferred;
                // A tensor-parallel shard keeps only its slice of the stored entry.
                int elementSize = TensorRef.ElementSize(ToBModel(w.DType));
                if (data.Deferred && data.Source is null)
                    throw new InvalidOperationException($"Weight '{w.Key}' was not read but has no source to reference.");
                long storedBytes = data.Deferred ? data.Source!.DataLength : data.Data.Length;
                ReadOnlyMemory<byte> bytes = data.Deferred ? ReadOnlyMemory<byte>.Empty
                    : w.Slice is { } slice ? slice.ApplyBytes(data.Data.Span, elementSize) : data.Data;
                var (first, run, stride, count) = w.Slice is { } s ? s.ByteRuns(elementSize) : (0L, storedBytes, storedBytes, 1L);
                long length = run * count;
                long offset = chip.AlignUp(size);
                if (data.Source is { } source && _coeffSources is not null)
                {
                    _coeffSources.Add(new CoeffSegment(offset, source.Key, first, run, stride, count));
                    _coeffEntries.TryAdd(source.Key, source);
                }
                else _coeffSources = null;
                locations.Add(new CoeffLocation(w.Key, (ulong)offset, (ulong)length));
                datas.Add(bytes);
                _values[w.Key] = new Val(Region.Coeff, offset, -1, ToBModel(w.DType), w.Shape);
                size = offset + length;
            }
            _coeffSize = size;
            // Deferred reads: the piece references its bytes; the blob is never built (nor held in memory).
            if (deferred) return ([], locations);
            var blob = new byte[size];
            for (int i = 0; i < datas.Count; i++) datas[i].Span.CopyTo(blob.AsSpan((int)locations[i].Offset));
            return (blob, locations);
        }

        private byte[] PackConstants()
        {
            var blob = new MemoryStream();
            foreach (GraphConstant c in graph.Constants.OrderBy(c => c.Key, StringComparer.Ordinal))
            {
                PieceTensorData data = ReadChecked(c.Key, c.DType, c.Shape);
                if (data.Deferred) throw new InvalidOperationException($"Constant '{c.Key}' was not read; constants are copied into the program.");
                long offset = chip.AlignUp(blob.Length);
                blob.SetLength(offset);
                blob.Position = offset;
                blob.Write(data.Data.Span);
                _values[c.Key] = new Val(Region.Const, offset, -1, ToBModel(c.DType), c.Shape);
            }
            return blob.ToArray();
        }

        private PieceTensorData ReadChecked(string key, GraphDType dtype, long[] shape)
        {
            PieceTensorData data = read(key);
            if (data.Descr != NpyDescr(dtype) || !data.Shape.SequenceEqual(shape))
                throw new LlmBuildException(ErrorCodes.PieceWeightsMismatch,
                    $"Piece {graph.Name}: weight file entry '{key}' is {data.Descr}[{string.Join(", ", data.Shape)}] but the piece needs {NpyDescr(dtype)}[{string.Join(", ", shape)}]. Rebuild to regenerate the piece weights.");
            long expected = shape.Aggregate(1L, (a, b) => a * b) * TensorRef.ElementSize(ToBModel(dtype));
            long stored = data.Deferred ? data.Source!.DataLength : data.Data.Length;
            if (stored != expected)
                throw new LlmBuildException(ErrorCodes.PieceWeightsMismatch, $"Piece {graph.Name}: weight file entry '{key}' holds {stored} bytes, expected {expected}. Rebuild.");
            return data;
        }

        private (IReadOnlyList<CompiledIo> Inputs, IReadOnlyList<CompiledIo> Outputs, long IoSize) BindIo()
        {
            long io = 0;
            CompiledIo Place(GraphTensor t, bool isOutput)
            {
                // The partial sums and residual passed between tensor-parallel steps stay f32 (TensorParallel's contract).
                var dtype = graph.Shard is not null && !TensorParallel.IsContractTensor(t.Name) ? BModelDataType.Float32
                    : IoType(graph.Piece.Kind, t, activation, isOutput);
                long bytes = t.ElementCount * TensorRef.ElementSize(dtype);
                long offset = chip.AlignUp(io);
                io = offset + bytes;
                return new CompiledIo(t.Name, dtype, t.Shape, offset, bytes);
            }
            var inputs = new List<CompiledIo>();
            for (int i = 0; i < graph.Inputs.Count; i++)
            {
                GraphTensor t = graph.Tensor(graph.Inputs[i]);
                CompiledIo c = Place(t, false);
                inputs.Add(c);
                var place = new Val(Region.Input, i, -1, c.DType, t.Shape);
                // Float inputs stored in the activation dtype are widened once into f32 ctx memory.
                if (c.DType is BModelDataType.BFloat16 or BModelDataType.Float16)
                {
                    Val f32 = NewBuffer(BModelDataType.Float32, t.Shape);
                    Emit(EmuOp.Convert, [place], [f32], [], [], t.Name);
                    _values[t.Name] = f32;
                }
                else _values[t.Name] = place;
            }
            var outputs = new List<CompiledIo>();
            for (int i = 0; i < graph.Outputs.Count; i++)
            {
                CompiledIo c = Place(graph.Tensor(graph.Outputs[i]), true);
                outputs.Add(c);
                _values["\0out" + i] = new Val(Region.Output, i, -1, c.DType, c.Shape);
            }
            return (inputs, outputs, chip.AlignUp(io));
        }

        // ------------------------------------------------------------ ops

        private Val Get(string name) => name.Length == 0 ? NoneVal
            : _values.TryGetValue(name, out Val? v) ? v
            : throw new InvalidOperationException($"Piece {graph.Name}: tensor '{name}' has no value.");

        private Val NewBuffer(BModelDataType dtype, long[] shape)
        {
            long bytes = shape.Aggregate(1L, (a, b) => a * b) * TensorRef.ElementSize(dtype);
            _bufferSizes.Add(bytes);
            return new Val(Region.Ctx, 0, _bufferSizes.Count - 1, dtype, shape);
        }

        private Val Define(string name, BModelDataType dtype = BModelDataType.Float32)
        {
            Val v = NewBuffer(dtype, graph.Tensor(name).Shape);
            _values[name] = v;
            return v;
        }

        private void Emit(EmuOp op, Val[] inputs, Val[] outputs, long[] ints, float[] floats, string name) =>
            _instrs.Add(new Instr(op, inputs, outputs, ints, floats, name));

        private LlmBuildException Unsupported(GraphOp op, string why) =>
            new(ErrorCodes.CodegenUnsupported, $"Piece {graph.Name}: cannot lower {op.Kind} ({op.Outputs[0]}) for {chip.Name}: {why}.");

        private void Lower(GraphOp op)
        {
            string outName = op.Outputs[0];
            Val[] ins = op.Inputs.Select(Get).ToArray();
            switch (op.Kind)
            {
                case "top.Gather":
                {
                    var (outer, extent, inner) = GraphInterpreter.GatherLayout(op, graph.Tensor(op.Inputs[0]).Shape);
                    Emit(EmuOp.Gather, [ins[0], ins[1]], [Define(outName)], [outer, extent, inner], [], outName);
                    break;
                }
                case "top.RMSNorm":
                    Emit(EmuOp.RmsNorm, [ins[0], ins[1]], [Define(outName)], [], [(float)op.Float("eps")], outName);
                    break;
                case "top.MatMul" when ins[1].Shape.Length > 2:
                    LowerBatchedMatMul(op, ins);
                    break;
                case "top.Permute": LowerPermute(op, ins[0]); break;
                case "top.MatMul":
                {
                    bool rt = op.BoolOr("right_transpose", false);
                    long k = ins[0].Shape[^1];
                    long n = graph.Tensor(outName).Shape[^1];
                    long m = ins[0].Count / k;
                    long[] expected = rt ? [n, k] : [k, n];
                    if (ins[1].Count != n * k) throw Unsupported(op, $"weight has {ins[1].Count} elements, expected {n}x{k}");
                    _ = expected;
                    Emit(EmuOp.MatMul, [ins[0], ins[1], ins.Length > 2 ? ins[2] : NoneVal], [Define(outName)], [m, k, n, rt ? 1 : 0], [], outName);
                    break;
                }
                case "top.A16MatMul":
                {
                    long bits = op.Int("weight_bits"), group = op.Int("q_group_size");
                    long k = ins[0].Shape[^1];
                    long n = graph.Tensor(outName).Shape[^1];
                    long m = ins[0].Count / k;
                    if (!op.BoolOr("right_transpose", false)) throw Unsupported(op, "A16MatMul needs right_transpose");
                    if (bits is not (4 or 8)) throw Unsupported(op, $"{bits}-bit weights");
                    // The op's width must be what the stored weight is (a mixed-precision build has both widths).
                    if (ins[1].Count != n * k * bits / 8) throw Unsupported(op, $"qweight has {ins[1].Count} bytes, {bits}-bit {n}x{k} weights take {n * k * bits / 8}");
                    Emit(EmuOp.A16MatMul, [ins[0], ins[1], ins[2], ins[3], ins.Length > 4 ? ins[4] : NoneVal], [Define(outName)],
                        [m, k, n, bits, group > 0 ? group : k], [], outName);
                    break;
                }
                case "top.Reshape":
                    if (ins[0].Buffer >= 0) _values[outName] = ins[0].Reshaped(graph.Tensor(outName).Shape);
                    else Emit(EmuOp.Convert, [ins[0]], [Define(outName, ins[0].DType)], [], [], outName);
                    break;
                case "top.Add": LowerBinary(op, ins, BinaryMode.Add, EmuOp.Binary); break;
                case "top.Sub": LowerBinary(op, ins, BinaryMode.Sub, EmuOp.Binary); break;
                case "top.Mul": LowerBinary(op, ins, BinaryMode.Mul, EmuOp.Binary); break;
                case "top.Div": LowerBinary(op, ins, BinaryMode.Div, EmuOp.Binary); break;
                case "top.Compare": LowerBinary(op, ins, CompareMode(op), EmuOp.Compare); break;
                case "top.MulConst":
                    Emit(EmuOp.MulConst, [ins[0]], [Define(outName)], [], [(float)op.Float("const_val")], outName);
                    break;
                case "top.SiLU":
                    Emit(EmuOp.SiLU, [ins[0]], [Define(outName)], [], [], outName);
                    break;
                case "top.GELU":
                {
                    string mode = op.Find("approx_mode")?.Str ?? "normal";
                    if (mode is not ("tanh" or "normal"))
                        throw new LlmBuildException(ErrorCodes.CodegenUnsupported, $"top.GELU '{outName}': approx_mode '{mode}' is not supported (tanh, normal).");
                    Emit(mode == "tanh" ? EmuOp.GeluTanh : EmuOp.GeluErf, [ins[0]], [Define(outName)], [], [], outName);
                    break;
                }
                case "top.LayerNorm":
                    Emit(EmuOp.LayerNorm, [ins[0], ins[1], ins.Length > 2 ? ins[2] : NoneVal], [Define(outName)], [], [(float)op.Float("eps")], outName);
                    break;
                case "top.Tanh":
                    Emit(EmuOp.Tanh, [ins[0]], [Define(outName)], [], [], outName);
                    break;
                case "top.Slice": LowerSlice(op, ins[0]); break;
                case "top.Concat":
                {
                    long[] shape = graph.Tensor(outName).Shape;
                    int axis = (int)op.Int("axis");
                    if (axis < 0) axis += shape.Length;
                    long outer = shape[..axis].Aggregate(1L, (a, b) => a * b);
                    long inner = shape[(axis + 1)..].Aggregate(1L, (a, b) => a * b);
                    Emit(EmuOp.Concat, ins, [Define(outName)], [outer, inner, .. ins.Select(v => v.Shape[axis])], [], outName);
                    break;
                }
                case "top.FAttention":
                {
                    long batch = op.Int("batch"), qh = op.Int("q_head"), kvh = op.Int("kv_head"), dim = op.Int("dim"), mq = op.Int("mq"), mk = op.Int("mk");
                    bool causal = op.IntOr("mask_size", 0) != 0;
                    Emit(EmuOp.Attention, [ins[0], ins[1], ins[2], causal ? NoneVal : ins[3]], [Define(outName)],
                        [batch, qh, kvh, dim, mq, mk, causal ? 1 : 0], [(float)op.Float("scale")], outName);
                    break;
                }
                case "top.TopK":
                {
                    long[] inShape = ins[0].Shape;
                    long axis = op.IntOr("axis", inShape.Length - 1);
                    if (axis != inShape.Length - 1) throw Unsupported(op, "TopK runs over the last axis only");
                    long n = inShape[^1];
                    Val values = Define(op.Outputs[0]);
                    bool idIsOutput = graph.Outputs.Contains(op.Outputs[1]);
                    Val indices = Define(op.Outputs[1], idIsOutput ? BModelDataType.Int32 : BModelDataType.Float32);
                    Emit(EmuOp.TopK, [ins[0], ins.Length > 1 ? ins[1] : NoneVal], [values, indices], [ins[0].Count / n, n, op.Int("K")], [], outName);
                    break;
                }
                case "top.Softmax":
                    LastAxis(op, EmuOp.Softmax, ins[0], "axis");
                    break;
                case "top.CumSum":
                    LastAxis(op, EmuOp.CumSum, ins[0], "axis");
                    break;
                case "top.CompareConst":
                    if (op.BoolOr("inversed", false)) throw Unsupported(op, "inversed comparison");
                    Emit(EmuOp.CompareConst, [ins[0]], [Define(outName)], [(long)CompareMode(op)], [(float)op.Float("const_val")], outName);
                    break;
                case "top.Where":
                {
                    bool yConst = op.BoolOr("y_is_const", false);
                    if (op.BoolOr("x_is_const", false)) throw Unsupported(op, "constant x");
                    float yValue = yConst ? (float)op.Float("y_const_val") : 0f;
                    Val cond = ins[0], x = ins[1], y = yConst ? NoneVal : ins[2];
                    if (cond.Count != x.Count || (!y.Shape.Length.Equals(0) && y.Count != x.Count))
                        throw Unsupported(op, "Where operands must have one shape");
                    Emit(EmuOp.Where, [cond, x, y], [Define(outName)], [], [yValue], outName);
                    break;
                }
                case "top.GatherElements":
                {
                    long n = ins[0].Shape[^1], m = ins[1].Shape[^1];
                    Emit(EmuOp.GatherElements, [ins[0], ins[1]], [Define(outName)], [ins[0].Count / n, n, m], [], outName);
                    break;
                }
                case "top.ScatterElements":
                {
                    long n = ins[0].Shape[^1], m = ins[1].Shape[^1];
                    Emit(EmuOp.ScatterElements, [ins[0], ins[1], ins[2]], [Define(outName)], [ins[0].Count / n, n, m], [], outName);
                    break;
                }
                case "top.ScatterND":
                {
                    if (op.IntOr("reduction", 0) != 0) throw Unsupported(op, "ScatterND with a reduction");
                    long[] shape = ins[0].Shape;
                    Emit(EmuOp.ScatterND, [ins[0], ins[1], ins[2]], [Define(outName)], [shape.Length, .. shape], [], outName);
                    break;
                }
                default:
                    throw Unsupported(op, "the built-in backend has no kernel for this op");
            }
        }

        private static BinaryMode CompareMode(GraphOp op) => op.Attr("mode").Str switch
        {
            "Less" => BinaryMode.Less,
            "Greater" => BinaryMode.Greater,
            "LessOrEqual" => BinaryMode.LessOrEqual,
            "GreaterOrEqual" => BinaryMode.GreaterOrEqual,
            "Equal" => BinaryMode.Equal,
            "NotEqual" => BinaryMode.NotEqual,
            var m => throw new LlmBuildException(ErrorCodes.CodegenUnsupported, $"{op.Kind} ({op.Outputs[0]}): comparison mode '{m}' is not supported."),
        };

        private void LastAxis(GraphOp op, EmuOp code, Val x, string axisAttr)
        {
            long axis = op.IntOr(axisAttr, x.Shape.Length - 1);
            if (axis < 0) axis += x.Shape.Length;
            if (axis != x.Shape.Length - 1) throw Unsupported(op, "only the last axis is supported");
            long n = x.Shape[^1];
            Emit(code, [x], [Define(op.Outputs[0])], [x.Count / n, n], [], op.Outputs[0]);
        }

        /// <summary>Numpy broadcasting: shapes aligned on the right; a dimension of 1 repeats (stride 0).</summary>
        private void LowerBinary(GraphOp op, Val[] ins, BinaryMode mode, EmuOp code)
        {
            string outName = op.Outputs[0];
            long[] outShape = graph.Tensor(outName).Shape;
            int rank = outShape.Length;
            long[] Strides(Val v)
            {
                if (v.Shape.Length > rank) throw Unsupported(op, "operand has a higher rank than the result");
                var s = new long[rank];
                long stride = 1;
                for (int i = rank - 1, j = v.Shape.Length - 1; i >= 0; i--, j--)
                {
                    long dim = j >= 0 ? v.Shape[j] : 1;
                    if (dim != 1 && dim != outShape[i]) throw Unsupported(op, $"shapes [{string.Join(",", v.Shape)}] and [{string.Join(",", outShape)}] do not broadcast");
                    s[i] = dim == 1 ? 0 : stride;
                    stride *= dim;
                }
                return s;
            }
            // Element-wise kernels compute in f32: a weight stored in the activation dtype (a bias added after a
            // tensor-parallel reduce) is widened first.
            Val a = AsFloat32(ins[0], outName + ".lhs"), b = AsFloat32(ins[1], outName + ".rhs");
            Emit(code, [a, b], [Define(outName)], [(long)mode, rank, .. outShape, .. Strides(a), .. Strides(b)], [], outName);
        }

        private Val AsFloat32(Val v, string name)
        {
            if (v.DType == BModelDataType.Float32) return v;
            Val widened = NewBuffer(BModelDataType.Float32, v.Shape);
            Emit(EmuOp.Convert, [v], [widened], [], [], name);
            return widened;
        }

        /// <summary>A batched matmul ([…, M, K] × […, K, N], same leading dims): one MatMul instruction per leading index, on
        /// slices of the operands (gemma2's decomposed attention has batch × heads of them).</summary>
        private void LowerBatchedMatMul(GraphOp op, Val[] ins)
        {
            string outName = op.Outputs[0];
            bool rt = op.BoolOr("right_transpose", false);
            long[] xs = ins[0].Shape, ws = ins[1].Shape, ys = graph.Tensor(outName).Shape;
            int r = xs.Length;
            if (ws.Length != r || !xs[..(r - 2)].SequenceEqual(ws[..(r - 2)]) || ins.Length > 2 && ins[2].Region != Region.None)
                throw Unsupported(op, "batched MatMul needs operands with the same leading dimensions and no bias");
            long m = xs[r - 2], k = xs[r - 1], n = ys[r - 1];
            long batches = xs[..(r - 2)].Aggregate(1L, (a, b) => a * b);
            Val y = Define(outName);
            long xe = TensorRef.ElementSize(ins[0].DType), we = TensorRef.ElementSize(ins[1].DType), ye = TensorRef.ElementSize(y.DType);
            for (long i = 0; i < batches; i++)
            {
                Val xi = new(ins[0].Region, ins[0].Offset + i * m * k * xe, ins[0].Buffer, ins[0].DType, [m, k]);
                Val wi = new(ins[1].Region, ins[1].Offset + i * k * n * we, ins[1].Buffer, ins[1].DType, rt ? [n, k] : [k, n]);
                Val yi = new(y.Region, y.Offset + i * m * n * ye, y.Buffer, y.DType, [m, n]);
                Emit(EmuOp.MatMul, [xi, wi, NoneVal], [yi], [m, k, n, rt ? 1 : 0], [], $"{outName}[{i}]");
            }
        }

        /// <summary>top.Permute as a strided copy: the Slice instruction with the input's strides taken in the new order.</summary>
        private void LowerPermute(GraphOp op, Val x)
        {
            string outName = op.Outputs[0];
            long[] order = op.Attr("order").Ints!;
            int rank = x.Shape.Length;
            if (order.Length != rank) throw Unsupported(op, "order does not match the rank");
            var strides = new long[rank];
            for (long i = rank - 1, s = 1; i >= 0; s *= x.Shape[i], i--) strides[i] = s;
            long[] outShape = graph.Tensor(outName).Shape;
            Emit(EmuOp.Slice, [x], [Define(outName)], [rank, .. outShape, .. order.Select(a => strides[a]), 0], [], outName);
        }

        private void LowerSlice(GraphOp op, Val x)
        {
            string outName = op.Outputs[0];
            long[] outShape = graph.Tensor(outName).Shape;
            long[] offset = op.Attr("offset").Ints!, steps = op.Attr("steps").Ints!;
            int rank = x.Shape.Length;
            if (outShape.Length != rank || offset.Length != rank || steps.Length != rank) throw Unsupported(op, "rank mismatch");
            var strides = new long[rank];
            long stride = 1, start = 0;
            for (int i = rank - 1; i >= 0; i--)
            {
                long o = offset[i] < 0 ? offset[i] + x.Shape[i] : offset[i];
                if (steps[i] <= 0) throw Unsupported(op, "non-positive steps");
                start += o * stride;
                strides[i] = stride * steps[i];
                stride *= x.Shape[i];
            }
            Emit(EmuOp.Slice, [x], [Define(outName)], [rank, .. outShape, .. strides, start], [], outName);
        }

        // ------------------------------------------------------------ planning

        private (long[] Offsets, long CtxSize) PlanCtx()
        {
            int count = _bufferSizes.Count;
            var start = Enumerable.Repeat(int.MaxValue, count).ToArray();
            var end = Enumerable.Repeat(-1, count).ToArray();
            for (int i = 0; i < _instrs.Count; i++)
            {
                foreach (Val v in _instrs[i].Inputs.Concat(_instrs[i].Outputs))
                {
                    if (v.Buffer < 0) continue;
                    start[v.Buffer] = Math.Min(start[v.Buffer], i);
                    end[v.Buffer] = Math.Max(end[v.Buffer], i);
                }
            }
            foreach (int b in _probeBuffers) end[b] = _instrs.Count;
            var intervals = new LiveInterval[count];
            for (int b = 0; b < count; b++)
                intervals[b] = start[b] == int.MaxValue ? new LiveInterval(_bufferSizes[b], 0, 0) : new LiveInterval(_bufferSizes[b], start[b], end[b]);
            long[] offsets = MemoryPlanner.Plan(intervals, chip.Alignment, out long total);
            return (offsets, total);
        }
    }
}
