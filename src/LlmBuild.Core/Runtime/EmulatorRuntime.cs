using LlmBuild.Core.BModel;
using LlmBuild.Core.Chips;
using LlmBuild.Core.Codegen;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.Runtime;

/// <summary>A net input or output as the runtime sees it.</summary>
public sealed record NetTensor(string Name, BModelDataType DType, long[] Shape, long Bytes)
{
    public long Count => Shape.Aggregate(1L, (a, b) => a * b);
}

/// <summary>A loaded net: its program, where its coefficients and constants sit in device memory, and its default io buffers.</summary>
public sealed class EmulatorNet
{
    internal EmulatorNet(string name, EmuProgram program, DeviceMem coeff, DeviceMem constants, NetTensor[] inputs, NetTensor[] outputs,
        DeviceMem[] inputMems, DeviceMem[] outputMems)
    {
        Name = name; Program = program; Coeff = coeff; Constants = constants; Inputs = inputs; Outputs = outputs;
        InputMems = inputMems; OutputMems = outputMems;
    }

    public string Name { get; }
    public EmuProgram Program { get; }
    public DeviceMem Coeff { get; }
    public DeviceMem Constants { get; }
    public IReadOnlyList<NetTensor> Inputs { get; }
    public IReadOnlyList<NetTensor> Outputs { get; }
    /// <summary>The io buffers the runtime allocated for each input and output (used when a launch binds no other memory).</summary>
    public IReadOnlyList<DeviceMem> InputMems { get; }
    public IReadOnlyList<DeviceMem> OutputMems { get; }

    public int InputIndex(string name) => IndexOf(Inputs, name, "input");
    public int OutputIndex(string name) => IndexOf(Outputs, name, "output");

    private int IndexOf(IReadOnlyList<NetTensor> list, string name, string what)
    {
        for (int i = 0; i < list.Count; i++) if (list[i].Name == name) return i;
        throw new LlmBuildException(ErrorCodes.RuntimeBadInput, $"Net '{Name}' has no {what} '{name}' (it has {string.Join(", ", list.Select(t => t.Name))}).");
    }
}

/// <summary>
/// Runs a bmodel built by LlmBuild's built-in backend on the CPU, the way a board runtime drives silicon: loading copies
/// every distinct coefficient blob into one device-memory buffer (nets that share weights share the copy), reserves the
/// neuron (ctx) memory once for all nets and io buffers per net; <see cref="Launch"/> runs a net's program with any
/// device memory bound to its inputs and outputs (io_alone), e.g. the KV cache. Needs nothing but the bmodel.
/// </summary>
public sealed unsafe class EmulatorRuntime : IDisposable
{
    private readonly Dictionary<string, EmulatorNet> _nets = new(StringComparer.Ordinal);
    private readonly DeviceMem _ctx;

    private EmulatorRuntime(BModelContainer container, long extraBytes)
    {
        BModelFile model = container.Model;
        Chip = ChipProfile.FromBModelChip(model.Chip)
            ?? throw new LlmBuildException(ErrorCodes.NotEmulatorModel,
                $"'{container.Name}' is built for chip '{model.Chip}', not for the LlmBuild emulator (chips {string.Join(", ", ChipProfile.All.Select(c => c.BModelChip))}). Run it on its board, or rebuild with the built-in backend.", container.Name);
        DeviceCount = (int)Math.Max(1, model.DeviceNum);
        long align = Chip.Alignment;
        long Align(long v) => (v + align - 1) / align * align;

        // Size the one device buffer: distinct blobs (by their place in the file), the shared ctx, every net's io, and extras.
        var blobs = new SortedDictionary<ulong, ulong>();
        long ioBytes = 0, ctx = (long)model.NeuronSize;
        foreach (NetInfo net in model.Nets)
        {
            if (net.Stages.Count != 1)
                throw new LlmBuildException(ErrorCodes.NotEmulatorModel, $"'{container.Name}': net '{net.Name}' has {net.Stages.Count} stages; the emulator runs static one-stage nets.", container.Name);
            NetParameter p = net.Stages[0];
            if (p.CoeffMem?.BinaryCoeff is { } cb) blobs[cb.Start] = cb.Size;
            if (p.CmdGroups.Count != 1 || p.CmdGroups[0].BinaryBdc is null)
                throw new LlmBuildException(ErrorCodes.NotEmulatorModel, $"'{container.Name}': net '{net.Name}' has no emulator program.", container.Name);
            if (p.CmdGroups[0].BinaryGdma is { } gb) blobs[gb.Start] = Math.Max(blobs.GetValueOrDefault(gb.Start), gb.Size);
            ctx = Math.Max(ctx, (long)p.CtxSize);
            foreach (var t in p.InputTensors.Concat(p.OutputTensors)) ioBytes += Align((long)t.Size);
        }
        long total = blobs.Values.Sum(s => Align((long)s)) + Align(ctx) + ioBytes + extraBytes + align * 4;
        Memory = new DeviceMemory(total, Chip.Alignment);

        var placed = new Dictionary<ulong, DeviceMem>();
        foreach (var (start, size) in blobs)
        {
            DeviceMem mem = Memory.Allocate((long)size);
            Memory.Write(mem, container.GetSpan(new BinaryRef(start, size)));
            placed[start] = mem;
        }
        _ctx = Memory.Allocate(Math.Max(ctx, 1));
        foreach (NetInfo net in model.Nets)
        {
            NetParameter p = net.Stages[0];
            EmuProgram program = EmuProgram.Decode(container.GetSpan(p.CmdGroups[0].BinaryBdc!.Value), $"'{container.Name}' net '{net.Name}'");
            DeviceMem coeff = p.CoeffMem?.BinaryCoeff is { Size: > 0 } cb ? placed[cb.Start] : default;
            DeviceMem consts = p.CmdGroups[0].BinaryGdma is { Size: > 0 } gb ? placed[gb.Start].Slice(0, (long)gb.Size) : default;
            NetTensor ToTensor(BModelTensor t) => new(t.Name, t.DataType, t.Shape.ToArray(), (long)t.Size);
            var inputs = p.InputTensors.Select(ToTensor).ToArray();
            var outputs = p.OutputTensors.Select(ToTensor).ToArray();
            var inMems = inputs.Select(t => Memory.Allocate(t.Bytes)).ToArray();
            var outMems = outputs.Select(t => Memory.Allocate(t.Bytes)).ToArray();
            _nets.Add(net.Name, new EmulatorNet(net.Name, program, coeff, consts, inputs, outputs, inMems, outMems));
        }
        NetNames = model.Nets.Select(n => n.Name).ToArray();
    }

    /// <summary>Loads a bmodel; <paramref name="extraDeviceBytes"/> reserves device memory for <see cref="Allocate"/> (e.g. the KV cache).</summary>
    public static EmulatorRuntime Load(string bmodelPath, long extraDeviceBytes = 0)
    {
        using BModelContainer container = BModelReader.Read(bmodelPath);
        return new EmulatorRuntime(container, extraDeviceBytes);
    }

    /// <summary>Reads just the nets of a bmodel (to size the extra device memory before loading).</summary>
    public static BModelFile ReadModel(string bmodelPath)
    {
        using BModelContainer container = BModelReader.Read(bmodelPath);
        return container.Model;
    }

    public ChipProfile Chip { get; }
    public int DeviceCount { get; }
    public DeviceMemory Memory { get; }
    public IReadOnlyList<string> NetNames { get; }

    public bool HasNet(string name) => _nets.ContainsKey(name);

    public EmulatorNet Net(string name) => _nets.TryGetValue(name, out var n) ? n
        : throw new LlmBuildException(ErrorCodes.RuntimeBadInput, $"The model has no net '{name}' (it has {string.Join(", ", NetNames)}).");

    public DeviceMem Allocate(long bytes) => Memory.Allocate(bytes);

    /// <summary>Runs a net. Inputs and outputs not bound (null entries, or null arrays) use the net's own io buffers.</summary>
    public void Launch(EmulatorNet net, DeviceMem?[]? inputs = null, DeviceMem?[]? outputs = null)
    {
        var inMems = new DeviceMem[net.Inputs.Count];
        var outMems = new DeviceMem[net.Outputs.Count];
        for (int i = 0; i < inMems.Length; i++)
        {
            inMems[i] = inputs is not null && i < inputs.Length && inputs[i] is { } m ? m : net.InputMems[i];
            if (inMems[i].Size < net.Inputs[i].Bytes)
                throw new LlmBuildException(ErrorCodes.RuntimeBadInput, $"Net '{net.Name}' input '{net.Inputs[i].Name}' needs {net.Inputs[i].Bytes} bytes; the bound device memory has {inMems[i].Size}.");
        }
        for (int i = 0; i < outMems.Length; i++)
        {
            outMems[i] = outputs is not null && i < outputs.Length && outputs[i] is { } m ? m : net.OutputMems[i];
            if (outMems[i].Size < net.Outputs[i].Bytes)
                throw new LlmBuildException(ErrorCodes.RuntimeBadInput, $"Net '{net.Name}' output '{net.Outputs[i].Name}' needs {net.Outputs[i].Bytes} bytes; the bound device memory has {outMems[i].Size}.");
        }
        var executor = new Executor(this, net, inMems, outMems);
        foreach (EmuInstr instr in net.Program.Instructions) executor.Run(instr);
    }

    /// <summary>A named tensor the last launch of <paramref name="net"/> left in ctx memory (see <see cref="EmuProbe"/>), as f32.</summary>
    public float[] ReadProbe(EmulatorNet net, string name)
    {
        EmuProbe probe = net.Program.Probes.FirstOrDefault(p => p.Name == name)
            ?? throw new LlmBuildException(ErrorCodes.RuntimeBadInput, $"Net '{net.Name}' keeps no tensor '{name}' after it runs.");
        return Kernels.ToFloat(Memory.Pointer(_ctx.Offset + probe.Tensor.Offset), probe.Tensor.DType, probe.Tensor.Count);
    }

    /// <summary>Reads a device buffer holding <paramref name="count"/> elements of <paramref name="dtype"/> as f32.</summary>
    public float[] ReadFloat(DeviceMem mem, BModelDataType dtype, long count)
    {
        if (count * TensorRef.ElementSize(dtype) > mem.Size) throw new ArgumentOutOfRangeException(nameof(count));
        return Kernels.ToFloat(Memory.Pointer(mem.Offset), dtype, count);
    }

    /// <summary>Writes f32 values into a device buffer as <paramref name="dtype"/>.</summary>
    public void WriteFloat(DeviceMem mem, BModelDataType dtype, ReadOnlySpan<float> values)
    {
        if (values.Length * TensorRef.ElementSize(dtype) > mem.Size) throw new ArgumentOutOfRangeException(nameof(values));
        fixed (float* v = values) Kernels.Convert((byte*)v, BModelDataType.Float32, Memory.Pointer(mem.Offset), dtype, values.Length);
    }

    public void Dispose() => Memory.Dispose();

    /// <summary>Executes instructions of one launch: resolves each operand's region to device memory and calls its kernel.</summary>
    private sealed class Executor(EmulatorRuntime rt, EmulatorNet net, DeviceMem[] inputs, DeviceMem[] outputs)
    {
        private byte* P(TensorRef t)
        {
            long bytes = t.Bytes;
            DeviceMem region = t.Region switch
            {
                Region.Ctx => rt._ctx,
                Region.Coeff => net.Coeff,
                Region.Const => net.Constants,
                Region.Input => inputs[checked((int)t.Offset)],
                Region.Output => outputs[checked((int)t.Offset)],
                _ => throw new LlmBuildException(ErrorCodes.NotEmulatorModel, $"Net '{net.Name}': operand in region {t.Region} has no memory."),
            };
            long offset = t.Region is Region.Input or Region.Output ? 0 : t.Offset;
            if (offset < 0 || offset + bytes > region.Size)
                throw new LlmBuildException(ErrorCodes.NotEmulatorModel, $"Net '{net.Name}': operand {t} lies outside its {t.Region} memory ({region.Size} bytes); the bmodel is damaged.");
            return rt.Memory.Pointer(region.Offset + offset);
        }

        private float* F(TensorRef t)
        {
            if (t.DType != BModelDataType.Float32)
                throw new LlmBuildException(ErrorCodes.NotEmulatorModel, $"Net '{net.Name}': operand {t} should be f32.");
            return (float*)P(t);
        }

        private float[]? Small(TensorRef t) => t.IsNone ? null : Kernels.ToFloat(P(t), t.DType, t.Count);

        public void Run(EmuInstr i)
        {
            TensorRef[] a = i.Inputs, o = i.Outputs;
            long[] n = i.Ints;
            switch (i.Op)
            {
                case EmuOp.Convert:
                    if (a[0].Count != o[0].Count) throw Bad(i, "element counts differ");
                    Kernels.Convert(P(a[0]), a[0].DType, P(o[0]), o[0].DType, a[0].Count);
                    break;
                case EmuOp.Gather:
                {
                    long rows = a[0].Shape[0], rowLen = a[0].Count / rows;
                    Kernels.Gather(P(a[0]), a[0].DType, rows, rowLen, P(a[1]), a[1].DType, a[1].Count, F(o[0]), $"Net '{net.Name}' {i.Name}");
                    break;
                }
                case EmuOp.RmsNorm:
                {
                    int h = (int)a[1].Count;
                    Kernels.RmsNorm(F(a[0]), a[0].Count / h, h, Small(a[1])!, i.Floats[0], F(o[0]));
                    break;
                }
                case EmuOp.MatMul:
                    Kernels.MatMul(F(a[0]), (int)n[0], (int)n[1], (int)n[2], P(a[1]), a[1].DType, n[3] != 0, Small(a[2]), F(o[0]));
                    break;
                case EmuOp.A16MatMul:
                    Kernels.A16MatMul(F(a[0]), (int)n[0], (int)n[1], (int)n[2], P(a[1]), F(a[2]), P(a[3]), (int)n[3], (int)n[4], Small(a[4]), F(o[0]));
                    break;
                case EmuOp.Binary:
                case EmuOp.Compare:
                {
                    int rank = (int)n[1];
                    Kernels.Binary((BinaryMode)n[0], F(a[0]), F(a[1]), F(o[0]), n[2..(2 + rank)], n[(2 + rank)..(2 + 2 * rank)], n[(2 + 2 * rank)..(2 + 3 * rank)]);
                    break;
                }
                case EmuOp.MulConst:
                {
                    float* x = F(a[0]), y = F(o[0]);
                    long c = a[0].Count;
                    System.Numerics.Tensors.TensorPrimitives.Multiply(new ReadOnlySpan<float>(x, (int)c), i.Floats[0], new Span<float>(y, (int)c));
                    break;
                }
                case EmuOp.SiLU:
                    Kernels.SiLU(F(a[0]), F(o[0]), a[0].Count);
                    break;
                case EmuOp.Slice:
                {
                    int rank = (int)n[0];
                    Kernels.Slice(F(a[0]), F(o[0]), n[1..(1 + rank)], n[(1 + rank)..(1 + 2 * rank)], n[1 + 2 * rank]);
                    break;
                }
                case EmuOp.Concat:
                {
                    long outer = n[0], inner = n[1], total = 0;
                    for (int k = 0; k < a.Length; k++) total += n[2 + k];
                    float* y = F(o[0]);
                    for (long r = 0; r < outer; r++)
                    {
                        long at = r * total * inner;
                        for (int k = 0; k < a.Length; k++)
                        {
                            long len = n[2 + k] * inner;
                            Buffer.MemoryCopy(F(a[k]) + r * len, y + at, len * 4, len * 4);
                            at += len;
                        }
                    }
                    break;
                }
                case EmuOp.Attention:
                    Kernels.Attention(F(a[0]), F(a[1]), F(a[2]), a[3].IsNone ? null : F(a[3]), F(o[0]),
                        (int)n[0], (int)n[1], (int)n[2], (int)n[3], (int)n[4], (int)n[5], n[6] != 0, i.Floats[0]);
                    break;
                case EmuOp.TopK:
                {
                    int k = (int)n[2];
                    int limit = a[1].IsNone ? k : Math.Clamp(Kernels.Index(P(a[1]), a[1].DType, 0), 1, k);
                    Kernels.TopK(F(a[0]), n[0], (int)n[1], k, limit, F(o[0]), P(o[1]), o[1].DType);
                    break;
                }
                case EmuOp.Softmax:
                    Kernels.Softmax(F(a[0]), F(o[0]), n[0], (int)n[1]);
                    break;
                case EmuOp.CumSum:
                    Kernels.CumSum(F(a[0]), F(o[0]), n[0], (int)n[1]);
                    break;
                case EmuOp.CompareConst:
                {
                    float* x = F(a[0]), y = F(o[0]);
                    for (long k = 0; k < a[0].Count; k++) y[k] = Kernels.Apply((BinaryMode)n[0], x[k], i.Floats[0]);
                    break;
                }
                case EmuOp.Where:
                {
                    float* c = F(a[0]), x = F(a[1]), y = F(o[0]);
                    float* z = a[2].IsNone ? null : F(a[2]);
                    for (long k = 0; k < o[0].Count; k++) y[k] = c[k] != 0 ? x[k] : z is null ? i.Floats[0] : z[k];
                    break;
                }
                case EmuOp.GatherElements:
                {
                    long rows = n[0], cols = n[1], m = n[2];
                    float* d = F(a[0]), y = F(o[0]);
                    byte* ids = P(a[1]);
                    for (long r = 0; r < rows; r++)
                        for (long k = 0; k < m; k++)
                        {
                            int id = Kernels.Index(ids, a[1].DType, r * m + k);
                            if ((uint)id >= (ulong)cols) throw new LlmBuildException(ErrorCodes.RuntimeBadInput, $"Net '{net.Name}' {i.Name}: index {id} is outside 0..{cols - 1}.");
                            y[r * m + k] = d[r * cols + id];
                        }
                    break;
                }
                case EmuOp.ScatterElements:
                {
                    long rows = n[0], cols = n[1], m = n[2];
                    float* d = F(a[0]), u = F(a[2]), y = F(o[0]);
                    byte* ids = P(a[1]);
                    Buffer.MemoryCopy(d, y, rows * cols * 4, rows * cols * 4);
                    for (long r = 0; r < rows; r++)
                        for (long k = 0; k < m; k++)
                        {
                            int id = Kernels.Index(ids, a[1].DType, r * m + k);
                            if ((uint)id >= (ulong)cols) throw new LlmBuildException(ErrorCodes.RuntimeBadInput, $"Net '{net.Name}' {i.Name}: index {id} is outside 0..{cols - 1}.");
                            y[r * cols + id] = u[r * m + k];
                        }
                    break;
                }
                case EmuOp.ScatterND:
                {
                    int rank = (int)n[0];
                    long[] shape = n[1..(1 + rank)];
                    float* d = F(a[0]), idx = F(a[1]), u = F(a[2]), y = F(o[0]);
                    long count = o[0].Count;
                    Buffer.MemoryCopy(d, y, count * 4, count * 4);
                    long points = a[1].Count / rank;
                    for (long p = 0; p < points; p++)
                    {
                        long off = 0;
                        for (int r = 0; r < rank; r++) off = off * shape[r] + (long)idx[p * rank + r];
                        if (off < 0 || off >= count) throw Bad(i, "scatter index out of range");
                        y[off] = u[p];
                    }
                    break;
                }
                default:
                    throw Bad(i, "unknown opcode");
            }
        }

        private LlmBuildException Bad(EmuInstr i, string why) =>
            new(ErrorCodes.NotEmulatorModel, $"Net '{net.Name}' instruction {i.Op} ({i.Name}): {why}; the bmodel's program is damaged.");
    }
}
