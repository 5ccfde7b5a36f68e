using System.Globalization;
using System.Text;
using System.Text.Json;

namespace LlmBuild.Core.BModel;

/// <summary>Memory a bmodel needs at run time, computed as model_tool does (bmodel_mem_info_t).</summary>
public sealed record BModelMemoryInfo(
    ulong BdCmdBytes, ulong GdmaCmdBytes, ulong DynamicIrBytes, ulong NeuronBytes, ulong CoeffBytes, ulong MiddleBufferBytes,
    ulong HostNeuronBytes, ulong HostCoeffBytes)
{
    public ulong InstructBytes => BdCmdBytes + GdmaCmdBytes + DynamicIrBytes;
    public ulong RuntimeBytes => NeuronBytes + MiddleBufferBytes;
    public ulong DeviceTotalBytes => CoeffBytes + InstructBytes + RuntimeBytes;
    public ulong HostTotalBytes => HostCoeffBytes + HostNeuronBytes;
}

/// <summary>
/// Describes a bmodel the way TPU-MLIR's <c>model_tool --info</c> does (version, chip, create time, kernel module, per
/// net static/dynamic and address mode, per stage the inputs/outputs with shape, type, scale and zero point, device
/// and host memory), as text or as JSON for machines.
/// </summary>
public static class BModelInspector
{
    private const string NetRule = "==========================================";

    /// <summary>The description of the bmodel at <paramref name="path"/>; with <paramref name="verifyWeights"/> a damaged
    /// coefficient blob is a coded error (LLMB0408) rather than a clean-looking report.</summary>
    public static string Text(string path, bool verifyWeights = true)
    {
        using var c = BModelReader.Read(path);
        if (verifyWeights) c.VerifyCheckCodes();
        return Text(c.Model);
    }

    public static string Json(string path, bool verifyWeights = true)
    {
        using var c = BModelReader.Read(path);
        if (verifyWeights) c.VerifyCheckCodes();
        return Json(c.Model);
    }

    public static string Text(BModelFile model)
    {
        var sb = new StringBuilder();
        void Line(string s) => sb.Append(s).Append('\n');
        Line($"bmodel version: {model.Type}.{model.Version}");
        sb.Append($"chip: {model.Chip}");
        if (model.DeviceNum > 1) sb.Append(CultureInfo.InvariantCulture, $",  device num: {model.DeviceNum}");
        sb.Append('\n');
        Line($"create time: {model.Time}");
        if (model.KernelModule is { } k)
        {
            Line($"kernel_module name: {k.FileName}");
            Line(FormattableString.Invariant($"kernel_module size: {k.Binary.Size}"));
        }
        else Line("no kernel_module");

        for (int i = 0; i < model.Nets.Count; i++)
        {
            var net = model.Nets[i];
            if (!string.IsNullOrEmpty(net.Cascade?.MainName) || net.Stages.Count == 0) continue; // cascade parts are listed per main net below
            Line(NetRule);
            Line(FormattableString.Invariant($"net {i}: [{net.Name}]  {(net.Stages[0].IsDynamic ? "dynamic" : "static")}"));
            if (net.AddrMode != 0) Line(FormattableString.Invariant($"addr mode: {net.AddrMode}"));
            if (net.Cascade is { } cascade) Line(FormattableString.Invariant($"device id: {cascade.DeviceId}"));
            for (int s = 0; s < net.Stages.Count; s++)
            {
                var stage = net.Stages[s];
                Line("------------");
                Line(FormattableString.Invariant($"stage {s}:"));
                if (stage.SubNets.Count > 1) Line(FormattableString.Invariant($"subnet number: {stage.SubNets.Count}"));
                bool dynamicInput = stage.NDynamic != 0 || stage.HWDynamic != 0;
                foreach (var t in stage.InputTensors) Line(TensorLine(t, "input", dynamicInput, -1));
                foreach (var t in stage.OutputTensors) Line(TensorLine(t, "output", false, -1));
            }
        }

        foreach (var (main, ins, outs) in CascadeGroups(model))
        {
            Line(NetRule);
            Line($"net: [{main}]  cascade");
            foreach (var (t, dev) in ins) Line(TensorLine(t, "input", false, (int)dev));
            foreach (var (t, dev) in outs) Line(TensorLine(t, "output", false, (int)dev));
        }

        var mem = MemoryInfo(model);
        sb.Append('\n');
        Line(FormattableString.Invariant(
            $"device mem size: {mem.DeviceTotalBytes} (weight: {mem.CoeffBytes}, instruct: {mem.InstructBytes}, runtime: {mem.RuntimeBytes})"));
        Line(FormattableString.Invariant($"host mem size: {mem.HostTotalBytes} (weight: {mem.HostCoeffBytes}, runtime: {mem.HostNeuronBytes})"));
        return sb.ToString();
    }

    private static string TensorLine(BModelTensor t, string kind, bool dynamic, int deviceId)
    {
        var sb = new StringBuilder();
        sb.Append(kind).Append(": ");
        if (deviceId >= 0) sb.Append(CultureInfo.InvariantCulture, $"devid({deviceId}) ");
        sb.Append(t.Name).Append(", ").Append(ShapeText(t.Shape, dynamic)).Append(", ").Append(BModelDataTypes.Name(t.DataType));
        sb.Append(", scale: ").Append(FormatFloat(t.Scale)).Append(", zero_point: ").Append(t.ZeroPoint.ToString(CultureInfo.InvariantCulture));
        return sb.ToString();
    }

    private static string ShapeText(IReadOnlyList<long> shape, bool dynamic)
    {
        if (shape.Count == 0) return "[ ]";
        string prefix = dynamic ? "max:" : "";
        return "[" + string.Join(", ", shape.Select(d => prefix + unchecked((ulong)d).ToString(CultureInfo.InvariantCulture))) + "]";
    }

    /// <summary>A float as C++ streams print it by default (printf "%g": 6 significant digits, exponent of at least two digits).</summary>
    public static string FormatFloat(float value)
    {
        if (float.IsNaN(value)) return float.IsNegative(value) ? "-nan" : "nan";
        if (float.IsInfinity(value)) return value > 0 ? "inf" : "-inf";
        string s = ((double)value).ToString("G6", CultureInfo.InvariantCulture);
        int e = s.IndexOf('E');
        if (e < 0) return s;
        // .NET writes "1E-05" / "1.5E+20"; C writes "1e-05" / "1.5e+20" (and at least two exponent digits).
        string mantissa = s[..e], exponent = s[(e + 1)..];
        char sign = exponent[0] == '-' ? '-' : '+';
        string digits = exponent.TrimStart('+', '-').TrimStart('0').PadLeft(2, '0');
        return $"{mantissa}e{sign}{digits}";
    }

    private static List<(string Main, List<(BModelTensor, uint)> Ins, List<(BModelTensor, uint)> Outs)> CascadeGroups(BModelFile model)
    {
        var groups = new SortedDictionary<string, List<NetInfo>>(StringComparer.Ordinal);
        foreach (var net in model.Nets)
            if (net.Cascade?.MainName is { Length: > 0 } main && net.Stages.Count > 0)
            {
                if (!groups.TryGetValue(main, out var list)) groups[main] = list = new();
                list.Add(net);
            }
        var result = new List<(string, List<(BModelTensor, uint)>, List<(BModelTensor, uint)>)>();
        foreach (var (main, nets) in groups)
        {
            var ins = new List<(BModelTensor, uint)>();
            var outs = new List<(BModelTensor, uint)>();
            foreach (var net in nets)
                foreach (var t in net.Stages[0].InputTensors.Concat(net.Stages[0].OutputTensors))
                {
                    // hidden: 1/3 the main net's inputs, 2/4 its outputs, 0 internal.
                    if (t.Hidden is 1 or 3) ins.Add((t, net.Cascade!.DeviceId));
                    else if (t.Hidden is 2 or 4) outs.Add((t, net.Cascade!.DeviceId));
                }
            // A main-net input several steps read (input_states in tensor-parallel steps 0 and 1) is listed once per device.
            static List<(BModelTensor, uint)> Order(List<(BModelTensor T, uint Dev)> l) =>
                l.DistinctBy(p => (p.Dev, p.T.Name)).OrderBy(p => p.Dev).ThenBy(p => p.T.Index).ToList();
            result.Add((main, Order(ins), Order(outs)));
        }
        return result;
    }

    /// <summary>
    /// Device and host memory as model_tool computes them: coefficient blobs counted once per distinct check code,
    /// command bytes of static TPU subnets, dynamic IR, the largest input/output buffer, and neuron memory (the
    /// largest ctx_size over nets, plus the ctx_size of each net with several subnets, which the runtime allocates
    /// separately). Unlike model_tool, every stage is counted (it reads stage 0 for all stages) and the per-net neuron
    /// sums are not reset between nets.
    /// </summary>
    public static BModelMemoryInfo MemoryInfo(BModelFile model)
    {
        ulong bd = 0, gdma = 0, ir = 0, coeff = 0, middle = 0, hostNeuron = 0, hostCoeff = 0, multiSubnetNeuron = 0, maxNeuron = 0;
        var deviceCodes = new HashSet<string>(StringComparer.Ordinal);
        var hostCodes = new HashSet<string>(StringComparer.Ordinal);
        bool legacyChip = model.Chip is "BM1682" or "BM1684";
        ulong legacyCmdBytes = model.Chip == "BM1682" ? 256ul : 128ul;

        void CountCmds(IEnumerable<CmdGroup> groups)
        {
            foreach (var g in groups)
            {
                if (legacyChip) { bd += g.BdcNum * legacyCmdBytes; gdma += g.GdmaNum * legacyCmdBytes; }
                else { bd += g.BinaryBdc?.Size ?? 0; gdma += g.BinaryGdma?.Size ?? 0; }
            }
        }

        foreach (var net in model.Nets)
        {
            ulong netNeuron = 0;
            bool multiSubnet = false;
            foreach (var stage in net.Stages)
            {
                netNeuron = Math.Max(netNeuron, stage.CtxSize);
                if (stage.SubNets.Count > 1) multiSubnet = true;
                if (stage.CoeffMem is { } c && deviceCodes.Add(Convert.ToHexString(c.CheckCode.ToArray()) + "/" + (c.BinaryCoeff?.Size ?? 0)))
                    coeff += c.BinaryCoeff?.Size ?? 0;
                foreach (var sub in stage.SubNets)
                {
                    if (sub.SubnetMode == 1)
                    {
                        foreach (var cc in sub.CpuParams.Take(1).SelectMany(p => p.CpuConsts))
                            if (hostCodes.Add(Convert.ToHexString(cc.CheckCode.ToArray()) + "/" + (cc.ConstData?.Size ?? 0)))
                                hostCoeff += cc.ConstData?.Size ?? 0;
                    }
                    else if (sub.SubnetMode == 0)
                    {
                        if (sub.IsDynamic != 0) ir += (ulong)sub.IrLen * 4;
                        else
                        {
                            CountCmds(sub.CmdGroups);
                            foreach (var core in sub.CoreCommands) CountCmds(core.GdmaTiuCommands);
                        }
                    }
                }
                hostNeuron += (ulong)stage.CpuMemSize * 4;
                foreach (var t in stage.InputTensors.Concat(stage.OutputTensors))
                    middle = Math.Max(middle, BufferBytes(t));
            }
            if (multiSubnet) multiSubnetNeuron += netNeuron;
            else maxNeuron = Math.Max(maxNeuron, netNeuron);
        }
        return new BModelMemoryInfo(bd, gdma, ir, multiSubnetNeuron + maxNeuron, coeff, middle, hostNeuron, hostCoeff);
    }

    /// <summary>The runtime's staging buffer for a tensor: 4 bytes per element (1 for int8/uint8), whatever the type.</summary>
    private static ulong BufferBytes(BModelTensor t)
    {
        ulong bytes = t.DataType is BModelDataType.Int8 or BModelDataType.UInt8 ? 1ul : 4ul;
        foreach (long d in t.Shape) bytes = unchecked(bytes * (ulong)d);
        return bytes;
    }

    /// <summary>The same information as <see cref="Text(BModelFile)"/> plus addresses and sizes, as JSON with a fixed key order.</summary>
    public static string Json(BModelFile model)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteString("version", $"{model.Type}.{model.Version}");
            w.WriteString("chip", model.Chip);
            w.WriteNumber("deviceNum", model.DeviceNum);
            w.WriteString("createTime", model.Time);
            if (model.KernelModule is { } k)
            {
                w.WriteStartObject("kernelModule");
                w.WriteString("name", k.FileName);
                w.WriteNumber("size", k.Binary.Size);
                w.WriteEndObject();
            }
            else w.WriteNull("kernelModule");
            w.WriteStartArray("nets");
            for (int i = 0; i < model.Nets.Count; i++)
            {
                var net = model.Nets[i];
                w.WriteStartObject();
                w.WriteNumber("index", i);
                w.WriteString("name", net.Name);
                w.WriteBoolean("dynamic", net.Stages.Count > 0 && net.Stages[0].IsDynamic);
                w.WriteNumber("addrMode", net.AddrMode);
                if (net.Cascade is { } c)
                {
                    w.WriteStartObject("cascade");
                    w.WriteNumber("deviceId", c.DeviceId);
                    w.WriteNumber("step", c.Step);
                    w.WriteString("mainName", c.MainName);
                    w.WriteEndObject();
                }
                w.WriteStartArray("stages");
                for (int s = 0; s < net.Stages.Count; s++)
                {
                    var stage = net.Stages[s];
                    w.WriteStartObject();
                    w.WriteNumber("index", s);
                    w.WriteNumber("subnets", stage.SubNets.Count);
                    w.WriteNumber("ctxAddr", stage.CtxAddr);
                    w.WriteNumber("ctxSize", stage.CtxSize);
                    w.WriteNumber("coeffSize", stage.CoeffMem?.BinaryCoeff?.Size ?? 0);
                    WriteTensors(w, "inputs", stage.InputTensors);
                    WriteTensors(w, "outputs", stage.OutputTensors);
                    w.WriteEndObject();
                }
                w.WriteEndArray();
                w.WriteEndObject();
            }
            w.WriteEndArray();
            var mem = MemoryInfo(model);
            w.WriteStartObject("deviceMemory");
            w.WriteNumber("total", mem.DeviceTotalBytes);
            w.WriteNumber("weight", mem.CoeffBytes);
            w.WriteNumber("instruct", mem.InstructBytes);
            w.WriteNumber("runtime", mem.RuntimeBytes);
            w.WriteEndObject();
            w.WriteStartObject("hostMemory");
            w.WriteNumber("total", mem.HostTotalBytes);
            w.WriteNumber("weight", mem.HostCoeffBytes);
            w.WriteNumber("runtime", mem.HostNeuronBytes);
            w.WriteEndObject();
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(ms.ToArray()) + "\n";
    }

    private static void WriteTensors(Utf8JsonWriter w, string name, IReadOnlyList<BModelTensor> tensors)
    {
        w.WriteStartArray(name);
        foreach (var t in tensors)
        {
            w.WriteStartObject();
            w.WriteString("name", t.Name);
            w.WriteStartArray("shape");
            foreach (long d in t.Shape) w.WriteNumberValue(d);
            w.WriteEndArray();
            w.WriteString("dtype", BModelDataTypes.Name(t.DataType));
            if (float.IsFinite(t.Scale)) w.WriteNumber("scale", t.Scale);
            else w.WriteString("scale", FormatFloat(t.Scale));
            w.WriteNumber("zeroPoint", t.ZeroPoint);
            w.WriteNumber("deviceAddr", t.DeviceAddr);
            w.WriteNumber("size", t.Size);
            w.WriteNumber("memType", t.MemType);
            w.WriteEndObject();
        }
        w.WriteEndArray();
    }
}
