using LlmBuild.Core.BModel;
using LlmBuild.Core.Chips;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Models;

namespace LlmBuild.Core.Runtime;

/// <summary>
/// A net input or output as the runtime sees it. <see cref="Hidden"/> and <see cref="Index"/> place a cascade part's
/// tensor in its main net (bmodel Tensor.hidden: 0 between steps, 1/3 a main input, 2/4 a main output; index: its
/// position in the main net's inputs or outputs).
/// </summary>
public sealed record NetTensor(string Name, BModelDataType DType, long[] Shape, long Bytes, int Hidden = 0, int Index = 0)
{
    public long Count => Shape.Aggregate(1L, (a, b) => a * b);
    public bool IsMainInput => Hidden is 1 or 3;
    public bool IsMainOutput => Hidden is 2 or 4;
}

/// <summary>A loaded net: its program, where its coefficients and constants sit in device memory, and its default io buffers.</summary>
public sealed class EmulatorNet
{
    internal EmulatorNet(string name, int device, Cascade? cascade, EmuProgram program, DeviceMem coeff, DeviceMem constants,
        NetTensor[] inputs, NetTensor[] outputs, DeviceMem[] inputMems, DeviceMem[] outputMems)
    {
        Name = name; Device = device; Cascade = cascade; Program = program; Coeff = coeff; Constants = constants;
        Inputs = inputs; Outputs = outputs; InputMems = inputMems; OutputMems = outputMems;
        _fusion = new Lazy<KvHistoryFusion?>(() => KvHistoryFusion.Find(program));
    }

    public string Name { get; }
    /// <summary>The device whose memory holds this net's coefficients, ctx and io (0 unless it is a cascade part).</summary>
    public int Device { get; }
    /// <summary>Set for a part of a tensor-parallel net: its device, step and main net.</summary>
    public Cascade? Cascade { get; }
    public EmuProgram Program { get; }
    public DeviceMem Coeff { get; }
    public DeviceMem Constants { get; }
    public IReadOnlyList<NetTensor> Inputs { get; }
    public IReadOnlyList<NetTensor> Outputs { get; }
    /// <summary>The io buffers the runtime allocated for each input and output (used when a launch binds no other memory).</summary>
    public IReadOnlyList<DeviceMem> InputMems { get; }
    public IReadOnlyList<DeviceMem> OutputMems { get; }

    /// <summary>Where this program's attentions read a Convert-Concat history directly (found on first use; null: nowhere).</summary>
    internal KvHistoryFusion? Fusion => _fusion.Value;

    private readonly Lazy<KvHistoryFusion?> _fusion;

    public int InputIndex(string name) => IndexOf(Inputs, name, "input");
    public int OutputIndex(string name) => IndexOf(Outputs, name, "output");

    private int IndexOf(IReadOnlyList<NetTensor> list, string name, string what)
    {
        for (int i = 0; i < list.Count; i++) if (list[i].Name == name) return i;
        throw new LlmBuildException(ErrorCodes.RuntimeBadInput, $"Net '{Name}' has no {what} '{name}' (it has {string.Join(", ", list.Select(t => t.Name))}).");
    }
}

/// <summary>
/// A net as a board application calls it by name: either one plain net, or a tensor-parallel cascade — parts per step and
/// device whose main inputs and outputs exist once per device (inputs listed by main-net position and device). Launching
/// runs the steps in order, the devices of a step concurrently, and moves each step's hidden outputs to the parts of
/// the next step that read them (the emulated all-reduce transfer).
/// </summary>
public sealed class EmulatorGroup
{
    private readonly DeviceMem[][] _inputMems, _outputMems;
    private readonly NetTensor[][] _inputs, _outputs;

    internal EmulatorGroup(string name, IReadOnlyList<IReadOnlyList<EmulatorNet>> steps, int devices, string[] inputNames, string[] outputNames,
        NetTensor[][] inputs, NetTensor[][] outputs, DeviceMem[][] inputMems, DeviceMem[][] outputMems)
    {
        Name = name; Steps = steps; Devices = devices; InputNames = inputNames; OutputNames = outputNames;
        _inputs = inputs; _outputs = outputs; _inputMems = inputMems; _outputMems = outputMems;
    }

    public string Name { get; }
    public int Devices { get; }
    public IReadOnlyList<IReadOnlyList<EmulatorNet>> Steps { get; }
    /// <summary>Main input and output names in net-contract order (without the per-device suffix).</summary>
    public IReadOnlyList<string> InputNames { get; }
    public IReadOnlyList<string> OutputNames { get; }
    public bool IsCascade => Devices > 1 || Steps.Count > 1;

    public NetTensor Input(int index, int device = 0) => Checked(_inputs, index, device, "input")[index][device];
    public NetTensor Output(int index, int device = 0) => Checked(_outputs, index, device, "output")[index][device];

    /// <summary>The net contract names tensors by position: a damaged net that lacks one is a coded error, not an index fault.</summary>
    private T[][] Checked<T>(T[][] tensors, int index, int device, string what) =>
        (uint)index < (uint)tensors.Length && (uint)device < (uint)tensors[index].Length ? tensors
        : throw new LlmBuildException(ErrorCodes.BModelBadTensor, $"Net '{Name}' has no {what} {index} on device {device} ({tensors.Length} {what}s); the net contract needs it. The bmodel is damaged; rebuild it.");
    /// <summary>The default buffer of main input <paramref name="index"/> on <paramref name="device"/>.</summary>
    public DeviceMem InputMem(int index, int device = 0) => _inputMems[index][device];
    public DeviceMem OutputMem(int index, int device = 0) => _outputMems[index][device];
    public bool HasInput(string name) => InputNames.Contains(name);

    public int InputIndex(string name) => IndexOf(InputNames, name, "input");
    public int OutputIndex(string name) => IndexOf(OutputNames, name, "output");

    private int IndexOf(IReadOnlyList<string> names, string name, string what)
    {
        for (int i = 0; i < names.Count; i++) if (names[i] == name) return i;
        throw new LlmBuildException(ErrorCodes.RuntimeBadInput, $"Net '{Name}' has no {what} '{name}' (it has {string.Join(", ", names)}).");
    }
}

/// <summary>
/// Runs a bmodel built by LlmBuild's built-in backend on the CPU, the way a board runtime drives silicon: loading copies
/// every distinct coefficient blob into device memory (nets on one device that share weights share the copy), reserves
/// neuron (ctx) memory once per device and io buffers per net; <see cref="Launch(EmulatorNet, DeviceMem?[], DeviceMem?[])"/>
/// runs a net's program with any device memory bound to its inputs and outputs (io_alone), e.g. the KV cache. A model
/// built for several devices (tensor parallel) gets one region of the emulated memory per device. Needs nothing but the bmodel.
/// </summary>
public sealed unsafe class EmulatorRuntime : IDisposable
{
    private readonly Dictionary<string, EmulatorNet> _nets = new(StringComparer.Ordinal);
    private readonly Dictionary<string, EmulatorGroup> _groups = new(StringComparer.Ordinal);
    private readonly DeviceMem[] _ctx;
    private readonly System.Collections.Concurrent.ConcurrentDictionary<(nint Address, BModelDataType DType, long Count), float[]> _widened = new();
    private readonly long[] _deviceBytes;
    private long _transferredBytes;

    private EmulatorRuntime(BModelContainer container, long extraBytes, bool verifyWeights)
    {
        BModelFile model = container.Model;
        Chip = CheckLoadable(model, container.Name);
        DeviceCount = (int)Math.Max(1, model.DeviceNum);
        long align = Chip.Alignment;
        long Align(long v) => (v + align - 1) / align * align;
        int DeviceOf(NetInfo net)
        {
            int d = (int)(net.Cascade?.DeviceId ?? 0);
            if (d >= DeviceCount)
                throw new LlmBuildException(ErrorCodes.NotEmulatorModel, $"'{container.Name}': net '{net.Name}' runs on device {d} but the model has {DeviceCount} device(s).", container.Name);
            return d;
        }

        // Size the buffer: distinct blobs per device (by their place in the file), one ctx per device, every net's io, and extras.
        var blobs = new SortedDictionary<(int Device, ulong Start), ulong>();
        var ctx = new long[DeviceCount];
        var programs = new EmuProgram[model.Nets.Count];
        long ioBytes = 0;
        for (int n = 0; n < model.Nets.Count; n++)
        {
            NetInfo net = model.Nets[n];
            int device = DeviceOf(net);
            NetParameter p = net.Stages[0];
            if (p.CmdGroups.Count != 1 || p.CmdGroups[0].BinaryBdc is null)
                throw new LlmBuildException(ErrorCodes.NotEmulatorModel, $"'{container.Name}': net '{net.Name}' has no emulator program.", container.Name);
            // An empty binary may start where another one does (a weightless net's coeff at the embedding's offset): keep the largest.
            foreach (BinaryRef b in new[] { p.CoeffMem?.BinaryCoeff, p.CmdGroups[0].BinaryGdma }.OfType<BinaryRef>())
                blobs[(device, b.Start)] = Math.Max(blobs.GetValueOrDefault((device, b.Start)), b.Size);
            programs[n] = EmuProgram.Decode(container.GetSpan(p.CmdGroups[0].BinaryBdc!.Value), $"'{container.Name}' net '{net.Name}'");
            // Ctx is sized by what the program addresses, which must lie within the declared ctx_size: a damaged ctx_size
            // can neither make the emulator reserve more than the programs use nor let a program address past it.
            ctx[device] = Math.Max(ctx[device], CtxNeeded(programs[n], net.Name, (long)p.CtxSize, container.Name));
            // Own buffers + a cascade's main io; sizes are checked, their sum saturates (MemoryNeeded refuses it).
            foreach (var t in p.InputTensors.Concat(p.OutputTensors)) ioBytes = ioBytes > long.MaxValue / 4 ? long.MaxValue / 4 : ioBytes + 2 * Align((long)t.Size);
        }
        long total = MemoryNeeded(blobs.Values.Select(s => Align((long)s)).Concat(ctx.Select(Align)).Append(ioBytes).Append(extraBytes).Append(align * (4 + DeviceCount)), container.Name);
        // Before any weight reaches device memory: damaged weights would otherwise run silently, with other outputs.
        if (verifyWeights) container.VerifyCheckCodes();
        Memory = new DeviceMemory(total, Chip.Alignment);
        _deviceBytes = new long[DeviceCount];

        var placed = new Dictionary<(int, ulong), DeviceMem>();
        foreach (var ((device, start), size) in blobs)
        {
            DeviceMem mem = Allocate((long)size, device);
            Memory.Write(mem, container.GetSpan(new BinaryRef(start, size)));
            placed[(device, start)] = mem;
        }
        _ctx = Enumerable.Range(0, DeviceCount).Select(d => Allocate(Math.Max(ctx[d], 1), d)).ToArray();
        for (int n = 0; n < model.Nets.Count; n++)
        {
            NetInfo net = model.Nets[n];
            int device = DeviceOf(net);
            NetParameter p = net.Stages[0];
            EmuProgram program = programs[n];
            if (_nets.ContainsKey(net.Name))
                throw new LlmBuildException(ErrorCodes.NotEmulatorModel, $"'{container.Name}' has two nets named '{net.Name}'; the bmodel is damaged.", container.Name);
            DeviceMem coeff = p.CoeffMem?.BinaryCoeff is { Size: > 0 } cb ? placed[(device, cb.Start)] : default;
            DeviceMem consts = p.CmdGroups[0].BinaryGdma is { Size: > 0 } gb ? placed[(device, gb.Start)].Slice(0, (long)gb.Size) : default;
            NetTensor ToTensor(BModelTensor t) => new(t.Name, t.DataType, t.Shape.ToArray(), (long)t.Size, t.Hidden, t.Index);
            var inputs = p.InputTensors.Select(ToTensor).ToArray();
            var outputs = p.OutputTensors.Select(ToTensor).ToArray();
            var inMems = inputs.Select(t => Allocate(t.Bytes, device)).ToArray();
            var outMems = outputs.Select(t => Allocate(t.Bytes, device)).ToArray();
            _nets.Add(net.Name, new EmulatorNet(net.Name, device, net.Cascade, program, coeff, consts, inputs, outputs, inMems, outMems));
        }
        NetNames = model.Nets.Select(n => n.Name).ToArray();
        BuildGroups(container.Name);
    }

    /// <summary>
    /// Loads a bmodel; <paramref name="extraDeviceBytes"/> reserves device memory for <see cref="Allocate"/> (e.g. the KV cache).
    /// Every tensor is checked against its shape and dtype, and (unless <paramref name="verifyWeights"/> is false) every
    /// coefficient blob against its sha256 check code, so a damaged file is a coded error, never wrong outputs.
    /// </summary>
    public static EmulatorRuntime Load(string bmodelPath, long extraDeviceBytes = 0, bool verifyWeights = true)
    {
        using BModelContainer container = BModelReader.Read(bmodelPath);
        return new EmulatorRuntime(container, extraDeviceBytes, verifyWeights);
    }

    /// <summary>Reads just the nets of a bmodel (to size the extra device memory before loading); its tensors are checked.</summary>
    public static BModelFile ReadModel(string bmodelPath)
    {
        using BModelContainer container = BModelReader.Read(bmodelPath);
        CheckLoadable(container.Model, container.Name);
        return container.Model;
    }

    /// <summary>The ctx bytes a program's operands and probes address; a coded error when one lies outside 0 … <paramref name="declared"/>.</summary>
    private static long CtxNeeded(EmuProgram program, string net, long declared, string file)
    {
        long needed = 0;
        foreach (TensorRef t in program.Instructions.SelectMany(i => i.Inputs.Concat(i.Outputs)).Concat(program.Probes.Select(p => p.Tensor)))
        {
            if (t.Region != Region.Ctx) continue;
            long end = t.Offset >= 0 && t.Offset <= declared ? t.Offset + t.Bytes : long.MaxValue; // Bytes fits a long: checked when decoded
            if (end < 0 || end > declared)
                throw new LlmBuildException(ErrorCodes.BModelBadTensor,
                    $"'{file}': net '{net}' addresses ctx memory at {t} beyond its ctx_size of {declared} bytes; the bmodel is damaged. Rebuild it.", file);
            needed = Math.Max(needed, end);
        }
        return needed;
    }

    /// <summary>Largest dimension a tensor may have: the runtime indexes rows and columns with 32-bit integers.</summary>
    private const long MaxDimension = int.MaxValue;

    /// <summary>
    /// Checks what loading multiplies and allocates before anything is: the model targets an emulator chip (returned),
    /// each net has one stage, each io tensor one shape whose dimensions lie in 1 … 2^31−1 and whose element count ×
    /// dtype size is its size field, and ctx fits a long. The flatbuffer reader only checked that the fields could be read.
    /// </summary>
    internal static ChipProfile CheckLoadable(BModelFile model, string file)
    {
        ChipProfile chip = ChipProfile.FromBModelChip(model.Chip)
            ?? throw new LlmBuildException(ErrorCodes.NotEmulatorModel,
                $"'{file}' is built for chip '{model.Chip}', not for the LlmBuild emulator (chips {string.Join(", ", ChipProfile.All.Select(c => c.BModelChip))}). Run it on its board, or rebuild with the built-in backend.", file);
        LlmBuildException Bad(string net, string what) => new(ErrorCodes.BModelBadTensor,
            $"'{file}': net '{net}' {what}; the file is damaged or was not built by LlmBuild. Rebuild it.", file);
        foreach (NetInfo net in model.Nets)
        {
            if (net.Stages.Count != 1)
                throw new LlmBuildException(ErrorCodes.NotEmulatorModel, $"'{file}': net '{net.Name}' has {net.Stages.Count} stages; the emulator runs static one-stage nets.", file);
            NetParameter p = net.Stages[0];
            if (p.CtxSize > long.MaxValue / 4) throw Bad(net.Name, $"declares {p.CtxSize} bytes of ctx memory");
            foreach (BModelTensor t in p.InputTensors.Concat(p.OutputTensors))
            {
                if (t.Shapes.Count != 1) throw Bad(net.Name, $"tensor '{t.Name}' has {t.Shapes.Count} shapes, not one");
                if (t.Shape.Count is < 1 or > 8) throw Bad(net.Name, $"tensor '{t.Name}' has {t.Shape.Count} dimensions (the net contract's tensors have 1 to 8)");
                if (!TensorRef.TryElementSize(t.DataType, out int elementSize)) throw Bad(net.Name, $"tensor '{t.Name}' has data type {(int)t.DataType}, which the emulator does not know");
                long bytes = elementSize;
                foreach (long d in t.Shape)
                {
                    if (d < 1 || d > MaxDimension)
                        throw Bad(net.Name, $"tensor '{t.Name}' has shape [{string.Join(", ", t.Shape)}]: dimension {d} is outside 1 … {MaxDimension}");
                    try { bytes = checked(bytes * d); }
                    catch (OverflowException) { throw Bad(net.Name, $"tensor '{t.Name}' has shape [{string.Join(", ", t.Shape)}], larger than any memory"); }
                }
                if ((ulong)bytes != t.Size)
                    throw Bad(net.Name, $"tensor '{t.Name}' has shape [{string.Join(", ", t.Shape)}] of {BModelDataTypes.Name(t.DataType)} ({bytes} bytes) but a size field of {t.Size} bytes");
            }
        }
        return chip;
    }

    /// <summary>
    /// The emulated device memory to reserve: the sum of <paramref name="parts"/>, refused with a coded error when it
    /// overflows or exceeds the memory this process may use (a damaged size must not become an out-of-memory abort).
    /// </summary>
    private static long MemoryNeeded(IEnumerable<long> parts, string file)
    {
        long total = 0;
        try { foreach (long part in parts) total = checked(total + part); }
        catch (OverflowException) { total = long.MaxValue; }
        long available = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
        if (total < 0 || total > available)
            throw new LlmBuildException(ErrorCodes.BModelTooLargeToLoad,
                $"'{file}' needs {total / (1024.0 * 1024 * 1024):0.0} GiB of emulated device memory, more than the {available / (1024.0 * 1024 * 1024):0.0} GiB this machine lets the process use. " +
                "Run it on a machine with more memory, or rebuild it smaller (SeqLength, Batch, Quantize); if it was built small, the file is damaged.", file);
        return total;
    }

    public ChipProfile Chip { get; }
    /// <summary>Devices the model was built for (NumDevice); each has its own region of <see cref="Memory"/>.</summary>
    public int DeviceCount { get; }
    public DeviceMemory Memory { get; }
    public IReadOnlyList<string> NetNames { get; }
    /// <summary>Bytes moved between devices by cascade launches so far (the all-reduce traffic).</summary>
    public long TransferredBytes => Interlocked.Read(ref _transferredBytes);

    /// <summary>Device memory allocated on <paramref name="device"/> (coefficients, ctx, io, and what callers allocated there).</summary>
    public long DeviceBytes(int device) => _deviceBytes[device];

    public bool HasNet(string name) => _nets.ContainsKey(name);

    /// <summary>True when <paramref name="name"/> is a net or a cascade's main net.</summary>
    public bool HasGroup(string name) => _groups.ContainsKey(name);

    /// <summary>Every net and cascade main net, ordinal order.</summary>
    public IEnumerable<string> GroupNames => _groups.Keys.Order(StringComparer.Ordinal);

    public EmulatorNet Net(string name) => _nets.TryGetValue(name, out var n) ? n
        : throw new LlmBuildException(ErrorCodes.RuntimeBadInput, $"The model has no net '{name}' (it has {string.Join(", ", NetNames)}).");

    /// <summary>A net by the name a board application uses: a plain net, or the main name of a tensor-parallel cascade.</summary>
    public EmulatorGroup Group(string name) => _groups.TryGetValue(name, out var g) ? g
        : throw new LlmBuildException(ErrorCodes.RuntimeBadInput, $"The model has no net '{name}' (it has {string.Join(", ", _groups.Keys)}).");

    /// <summary>Allocates device memory on <paramref name="device"/>.</summary>
    public DeviceMem Allocate(long bytes, int device = 0)
    {
        DeviceMem mem = Memory.Allocate(bytes);
        _deviceBytes[device] += (bytes + Chip.Alignment - 1) / Chip.Alignment * Chip.Alignment;
        return mem;
    }

    private void BuildGroups(string file)
    {
        foreach (EmulatorNet net in _nets.Values.Where(n => string.IsNullOrEmpty(n.Cascade?.MainName)))
            _groups.Add(net.Name, new EmulatorGroup(net.Name, [[net]], 1,
                net.Inputs.Select(t => t.Name).ToArray(), net.Outputs.Select(t => t.Name).ToArray(),
                net.Inputs.Select(t => new[] { t }).ToArray(), net.Outputs.Select(t => new[] { t }).ToArray(),
                net.InputMems.Select(m => new[] { m }).ToArray(), net.OutputMems.Select(m => new[] { m }).ToArray()));

        foreach (var parts in _nets.Values.Where(n => !string.IsNullOrEmpty(n.Cascade?.MainName)).GroupBy(n => n.Cascade!.MainName!, StringComparer.Ordinal))
        {
            string main = parts.Key;
            LlmBuildException Bad(string why) => new(ErrorCodes.NotEmulatorModel, $"'{file}': tensor-parallel net '{main}' {why}; the bmodel is damaged.", file);
            if (_groups.ContainsKey(main)) throw Bad("shares its name with a plain net");
            var steps = parts.GroupBy(n => n.Cascade!.Step).OrderBy(g => g.Key)
                .Select(g => (IReadOnlyList<EmulatorNet>)g.OrderBy(n => n.Device).ToArray()).ToArray();
            int devices = parts.Max(n => n.Device) + 1;

            // Main inputs/outputs: each (index, device) once; the name without the part's "_<device>" suffix.
            string MainName(NetTensor t, int device) =>
                t.Hidden is 3 or 4 && t.Name.EndsWith("_" + device, StringComparison.Ordinal) ? t.Name[..^(("_" + device).Length)] : t.Name;
            (string[] Names, NetTensor[][] Tensors, DeviceMem[][] Mems) Collect(bool input)
            {
                var found = new SortedDictionary<(int Index, int Device), (NetTensor Tensor, DeviceMem Mem)>();
                foreach (EmulatorNet part in parts)
                {
                    var list = input ? part.Inputs : part.Outputs;
                    for (int i = 0; i < list.Count; i++)
                    {
                        NetTensor t = list[i];
                        if (!(input ? t.IsMainInput : t.IsMainOutput)) continue;
                        var key = (t.Index, part.Device);
                        if (found.TryGetValue(key, out var seen))
                        {
                            if (!input) throw Bad($"has two producers of output {t.Index} on device {part.Device}");
                            if (seen.Tensor.Bytes != t.Bytes) throw Bad($"reads input {t.Index} on device {part.Device} with two sizes");
                            continue;
                        }
                        // Inputs get a buffer of their own per device (several parts read them); outputs default to the producer's buffer.
                        found[key] = (t, input ? Allocate(t.Bytes, part.Device) : part.OutputMems[i]);
                    }
                }
                int count = found.Count == 0 ? 0 : found.Keys.Max(k => k.Index) + 1;
                var names = new string[count];
                var tensors = new NetTensor[count][];
                var mems = new DeviceMem[count][];
                for (int i = 0; i < count; i++)
                {
                    tensors[i] = new NetTensor[devices];
                    mems[i] = new DeviceMem[devices];
                    for (int d = 0; d < devices; d++)
                    {
                        if (!found.TryGetValue((i, d), out var f)) throw Bad($"has no {(input ? "input" : "output")} {i} on device {d}");
                        tensors[i][d] = f.Tensor;
                        mems[i][d] = f.Mem;
                        string name = MainName(f.Tensor, d);
                        if (d == 0) names[i] = name;
                        else if (names[i] != name) throw Bad($"names {(input ? "input" : "output")} {i} '{names[i]}' on device 0 but '{name}' on device {d}");
                    }
                }
                return (names, tensors, mems);
            }
            var ins = Collect(input: true);
            var outs = Collect(input: false);
            _groups.Add(main, new EmulatorGroup(main, steps, devices, ins.Names, outs.Names, ins.Tensors, outs.Tensors, ins.Mems, outs.Mems));
        }
    }

    /// <summary>
    /// Runs a net or cascade by name. <paramref name="inputs"/>/<paramref name="outputs"/> bind main tensor (index, device)
    /// to device memory; null (or a null result) uses the group's default buffer.
    /// </summary>
    public void Launch(EmulatorGroup group, Func<int, int, DeviceMem?>? inputs = null, Func<int, int, DeviceMem?>? outputs = null)
    {
        if (!group.IsCascade)
        {
            EmulatorNet net = group.Steps[0][0];
            Launch(net, Enumerable.Range(0, net.Inputs.Count).Select(i => inputs?.Invoke(i, 0)).ToArray(),
                Enumerable.Range(0, net.Outputs.Count).Select(i => outputs?.Invoke(i, 0)).ToArray());
            return;
        }
        var hidden = new Dictionary<string, (DeviceMem Mem, int Device)>(StringComparer.Ordinal);
        foreach (IReadOnlyList<EmulatorNet> step in group.Steps)
        {
            var launches = new (EmulatorNet Net, DeviceMem?[] In, DeviceMem?[] Out)[step.Count];
            for (int p = 0; p < step.Count; p++)
            {
                EmulatorNet net = step[p];
                var ins = new DeviceMem?[net.Inputs.Count];
                for (int i = 0; i < ins.Length; i++)
                {
                    NetTensor t = net.Inputs[i];
                    if (t.IsMainInput) ins[i] = inputs?.Invoke(t.Index, net.Device) ?? group.InputMem(t.Index, net.Device);
                    else
                    {
                        // A hidden tensor an earlier step produced: read in place on its own device, else moved over.
                        if (!hidden.TryGetValue(t.Name, out var source))
                            throw new LlmBuildException(ErrorCodes.NotEmulatorModel, $"Net '{net.Name}' reads '{t.Name}', which no earlier step of '{group.Name}' produced; the bmodel is damaged.");
                        if (source.Device == net.Device) ins[i] = source.Mem;
                        else
                        {
                            Memory.Copy(net.InputMems[i], source.Mem, t.Bytes);
                            Interlocked.Add(ref _transferredBytes, t.Bytes);
                        }
                    }
                }
                var outs = new DeviceMem?[net.Outputs.Count];
                for (int i = 0; i < outs.Length; i++)
                    if (net.Outputs[i].IsMainOutput) outs[i] = outputs?.Invoke(net.Outputs[i].Index, net.Device);
                launches[p] = (net, ins, outs);
            }
            // The devices of a step run concurrently, as boards do.
            if (launches.Length == 1) Launch(launches[0].Net, launches[0].In, launches[0].Out);
            else Parallel.ForEach(launches, l => Launch(l.Net, l.In, l.Out));
            foreach (var (net, _, outs) in launches)
                for (int i = 0; i < net.Outputs.Count; i++)
                    if (!net.Outputs[i].IsMainOutput) hidden[net.Outputs[i].Name] = (outs[i] ?? net.OutputMems[i], net.Device);
        }
    }

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
        KvHistoryFusion? fusion = KvHistoryFusion.Enabled ? net.Fusion : null;
        var instructions = net.Program.Instructions;
        EmuOpProfile? profile = OpProfile;
        for (int i = 0; i < instructions.Count; i++)
        {
            if (fusion is not null && fusion.Skip[i]) continue;
            long t0 = profile is null ? 0 : System.Diagnostics.Stopwatch.GetTimestamp();
            if (fusion is not null && fusion.Attention.TryGetValue(i, out var sources)) executor.Attention(instructions[i], sources.K, sources.V);
            else executor.Run(instructions[i]);
            profile?.Add(instructions[i], System.Diagnostics.Stopwatch.GetTimestamp() - t0);
        }
    }

    /// <summary>When set, every instruction's wall time is added to it (the runtime benchmark's decode profile).</summary>
    internal EmuOpProfile? OpProfile { get; set; }

    /// <summary>A named tensor the last launch of <paramref name="net"/> left in ctx memory (see <see cref="EmuProbe"/>), as f32.</summary>
    public float[] ReadProbe(EmulatorNet net, string name)
    {
        EmuProbe probe = Probe(net, name);
        return Kernels.ToFloat(Memory.Pointer(_ctx[net.Device].Offset + probe.Tensor.Offset), probe.Tensor.DType, probe.Tensor.Count);
    }

    /// <summary>As <see cref="ReadProbe(EmulatorNet, string)"/>, its first <paramref name="destination"/>.Length elements into <paramref name="destination"/>.</summary>
    public void ReadProbe(EmulatorNet net, string name, Span<float> destination)
    {
        EmuProbe probe = Probe(net, name);
        if (destination.Length > probe.Tensor.Count) throw new ArgumentOutOfRangeException(nameof(destination));
        fixed (float* d = destination)
            Kernels.Convert(Memory.Pointer(_ctx[net.Device].Offset + probe.Tensor.Offset), probe.Tensor.DType, (byte*)d, BModelDataType.Float32, destination.Length);
    }

    private static EmuProbe Probe(EmulatorNet net, string name) =>
        net.Program.Probes.FirstOrDefault(p => p.Name == name)
            ?? throw new LlmBuildException(ErrorCodes.RuntimeBadInput, $"Net '{net.Name}' keeps no tensor '{name}' after it runs.");

    /// <summary>Reads a device buffer holding <paramref name="count"/> elements of <paramref name="dtype"/> as f32.</summary>
    public float[] ReadFloat(DeviceMem mem, BModelDataType dtype, long count)
    {
        if (count * TensorRef.ElementSize(dtype) > mem.Size) throw new ArgumentOutOfRangeException(nameof(count));
        return Kernels.ToFloat(Memory.Pointer(mem.Offset), dtype, count);
    }

    /// <summary>As <see cref="ReadFloat(DeviceMem, BModelDataType, long)"/>, into <paramref name="destination"/> (its length is the count).</summary>
    public void ReadFloat(DeviceMem mem, BModelDataType dtype, Span<float> destination)
    {
        if (destination.Length * TensorRef.ElementSize(dtype) > mem.Size) throw new ArgumentOutOfRangeException(nameof(destination));
        fixed (float* d = destination) Kernels.Convert(Memory.Pointer(mem.Offset), dtype, (byte*)d, BModelDataType.Float32, destination.Length);
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
                Region.Ctx => rt._ctx[net.Device],
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

        /// <summary>A small operand (bias, norm weight) as f32; coefficients never change, so theirs are widened once per runtime.</summary>
        private float[]? Small(TensorRef t)
        {
            if (t.IsNone) return null;
            byte* p = P(t);
            if (t.Region != Region.Coeff) return Kernels.ToFloat(p, t.DType, t.Count);
            return rt._widened.GetOrAdd(((nint)p, t.DType, t.Count), key => Kernels.ToFloat((byte*)key.Address, key.DType, key.Count));
        }

        /// <summary>An Attention instruction whose keys and values are read as history + new rows (see <see cref="KvHistoryFusion"/>).</summary>
        public void Attention(EmuInstr i, KvHistoryFusion.Source k, KvHistoryFusion.Source v)
        {
            TensorRef[] a = i.Inputs, o = i.Outputs;
            long[] n = i.Ints;
            int kvHeads = (int)n[2], dim = (int)n[3];
            Kernels.SplitRows Rows(KvHistoryFusion.Source s) =>
                new(P(s.History), s.History.DType, s.HistoryRows, F(s.Fresh), s.FreshRows, kvHeads, dim);
            Kernels.Attention(F(a[0]), Rows(k), Rows(v), a[3].IsNone ? null : F(a[3]), F(o[0]),
                (int)n[0], (int)n[1], kvHeads, dim, (int)n[4], (int)n[5], n[6] != 0, i.Floats[0]);
        }

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
                    if (n.Length != 3 || n[0] * n[1] * n[2] != a[0].Count) throw Bad(i, "the gather layout does not match the table");
                    Kernels.Gather(P(a[0]), a[0].DType, n[0], n[1], n[2], P(a[1]), a[1].DType, a[1].Count, F(o[0]), $"Net '{net.Name}' {i.Name}");
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
                    Kernels.Binary((BinaryMode)n[0], F(a[0]), F(a[1]), F(o[0]), n.AsSpan(2, rank), n.AsSpan(2 + rank, rank), n.AsSpan(2 + 2 * rank, rank));
                    break;
                }
                case EmuOp.MulConst:
                {
                    float* x = F(a[0]), y = F(o[0]);
                    long c = a[0].Count;
                    System.Numerics.Tensors.TensorPrimitives.Multiply(new ReadOnlySpan<float>(x, (int)c), i.Floats[0], new Span<float>(y, (int)c));
                    break;
                }
                case EmuOp.GeluTanh:
                    Kernels.GeluTanh(F(a[0]), F(o[0]), a[0].Count);
                    break;
                case EmuOp.GeluErf:
                    Kernels.GeluErf(F(a[0]), F(o[0]), a[0].Count);
                    break;
                case EmuOp.LayerNorm:
                {
                    int h = (int)a[1].Count;
                    Kernels.LayerNorm(F(a[0]), a[0].Count / h, h, Small(a[1])!, Small(a[2]), i.Floats[0], F(o[0]));
                    break;
                }
                case EmuOp.Tanh:
                    Kernels.Tanh(F(a[0]), F(o[0]), a[0].Count);
                    break;
                case EmuOp.SiLU:
                    Kernels.SiLU(F(a[0]), F(o[0]), a[0].Count);
                    break;
                case EmuOp.Slice:
                {
                    int rank = (int)n[0];
                    Kernels.Slice(F(a[0]), F(o[0]), n.AsSpan(1, rank), n.AsSpan(1 + rank, rank), n[1 + 2 * rank]);
                    break;
                }
                case EmuOp.Concat:
                {
                    var sizes = new long[a.Length];
                    var xs = new nint[a.Length];
                    for (int k = 0; k < a.Length; k++) (sizes[k], xs[k]) = (n[2 + k], (nint)F(a[k]));
                    Kernels.Concat(xs, sizes, n[0], n[1], F(o[0]));
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
