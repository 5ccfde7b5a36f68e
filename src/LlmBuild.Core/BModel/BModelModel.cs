namespace LlmBuild.Core.BModel;

// The bmodel object model: one record per table of TPU-MLIR's bmodel.fbs (field ids in BModelSchema). Every field
// of the format is kept so a bmodel read and written again (as combine does) loses nothing. Absent vectors read as
// empty lists and are not written when empty; absent optional tables and Binary structs are null.

/// <summary>An (offset, size) reference into the binary blob that follows the flatbuffer (bmodel's <c>Binary</c> struct).</summary>
public readonly record struct BinaryRef(ulong Start, ulong Size)
{
    public override string ToString() => $"[{Start}, +{Size}]";
}

/// <summary>Tensor element type codes of the bmodel format (bmruntime's <c>bm_data_type_t</c>).</summary>
public enum BModelDataType : uint
{
    Float32 = 0,
    Float16 = 1,
    Int8 = 2,
    UInt8 = 3,
    Int16 = 4,
    UInt16 = 5,
    Int32 = 6,
    UInt32 = 7,
    BFloat16 = 8,
    Int4 = 9,
    UInt4 = 10,
}

public static class BModelDataTypes
{
    private static readonly string[] Names =
        ["float32", "float16", "int8", "uint8", "int16", "uint16", "int32", "uint32", "bfloat16", "int4", "uint4"];

    /// <summary>The name model_tool prints ("unkown" for codes it does not know, spelled as it spells it).</summary>
    public static string Name(BModelDataType type) => (uint)type < Names.Length ? Names[(int)type] : "unkown";

    /// <summary>Bits per element, or 0 for an unknown code.</summary>
    public static int Bits(BModelDataType type) => type switch
    {
        BModelDataType.Float32 or BModelDataType.Int32 or BModelDataType.UInt32 => 32,
        BModelDataType.Float16 or BModelDataType.BFloat16 or BModelDataType.Int16 or BModelDataType.UInt16 => 16,
        BModelDataType.Int8 or BModelDataType.UInt8 => 8,
        BModelDataType.Int4 or BModelDataType.UInt4 => 4,
        _ => 0,
    };
}

/// <summary>The root table (<c>Model</c>).</summary>
public sealed record BModelFile
{
    public string Type { get; init; } = "B";
    public string Version { get; init; } = "2.2";
    /// <summary>Creation time as text. Never the wall clock: callers pass a fixed or input-derived value.</summary>
    public string Time { get; init; } = "";
    public string Chip { get; init; } = "";
    public IReadOnlyList<NetInfo> Nets { get; init; } = [];
    /// <summary>Largest ctx_size of any stage (the runtime's neuron memory).</summary>
    public ulong NeuronSize { get; init; }
    public KernelModule? KernelModule { get; init; }
    public uint DeviceNum { get; init; }
    public KernelModule? CpuopModule { get; init; }
    /// <summary>0: coefficients not combined; 1: combined by model_tool --combine_coeff.</summary>
    public uint BModelType { get; init; }
    public BinaryRef? LibBackend { get; init; }
}

/// <summary>A firmware or cpu-op library stored in the blob (<c>KernelModule</c> / <c>CpuopModule</c>).</summary>
public sealed record KernelModule(string FileName, BinaryRef Binary);

/// <summary>A named net with one or more stages (<c>Net</c>; stages are its <c>parameter</c> vector).</summary>
public sealed record NetInfo
{
    public string Name { get; init; } = "";
    public IReadOnlyList<NetParameter> Stages { get; init; } = [];
    public Cascade? Cascade { get; init; }
    /// <summary>0 basic, 1 io alone, 2 io tag, 3 io tag fuse.</summary>
    public int AddrMode { get; init; }
}

public sealed record Cascade(uint DeviceId, uint Step, string? MainName);

/// <summary>One stage of a net (<c>NetParameter</c>).</summary>
public sealed record NetParameter
{
    public IReadOnlyList<BModelTensor> InputTensors { get; init; } = [];
    public IReadOnlyList<BModelTensor> OutputTensors { get; init; } = [];
    public ulong CtxAddr { get; init; }
    public ulong CtxSize { get; init; }
    public CoeffMem? CoeffMem { get; init; }
    public bool IsDynamic { get; init; }
    public int NDynamic { get; init; }
    public int HWDynamic { get; init; }
    public IReadOnlyList<CmdGroup> CmdGroups { get; init; } = [];
    public BinaryRef? NetProfile { get; init; }
    public IReadOnlyList<StageIr> StageIrs { get; init; } = [];
    public BinaryRef? BinaryIr { get; init; }
    public IReadOnlyList<SubNet> SubNets { get; init; } = [];
    public uint CpuMemSize { get; init; }
    public IReadOnlyList<ulong> CtxSizes { get; init; } = [];
    public BinaryRef? NetStat { get; init; }
    public uint CoreNum { get; init; }
    public ulong IoAddr { get; init; }
    public ulong IoSize { get; init; }
    public BinaryRef? TensorLoc { get; init; }
    public ulong DynamicCtxAddr { get; init; }
    public ulong DynamicCoeffOffset { get; init; }
    public ulong DynamicCombinedCoeffOffset { get; init; }
}

/// <summary>A net input or output (<c>Tensor</c>).</summary>
public sealed record BModelTensor
{
    public string Name { get; init; } = "";
    public BModelDataType DataType { get; init; }
    public int GmemStmode { get; init; }
    public ulong DeviceAddr { get; init; }
    /// <summary>Device memory bytes.</summary>
    public ulong Size { get; init; }
    /// <summary>One shape for a static net; for a dynamic net, one per stage.</summary>
    public IReadOnlyList<IReadOnlyList<long>> Shapes { get; init; } = [];
    /// <summary>0 tpu, 1 cpu, 2 both.</summary>
    public uint MemType { get; init; }
    public float Scale { get; init; } = 1f;
    public uint CpuAddr { get; init; }
    public uint PadH { get; init; }
    public int ZeroPoint { get; init; }
    public int Hidden { get; init; }
    public int Index { get; init; }

    /// <summary>The first shape (what model_tool prints), or empty.</summary>
    public IReadOnlyList<long> Shape => Shapes.Count > 0 ? Shapes[0] : [];
}

/// <summary>Coefficient (weight) memory of a stage (<c>CoeffMem</c>).</summary>
public sealed record CoeffMem
{
    public ulong Address { get; init; }
    /// <summary>sha256 of the binary's bytes.</summary>
    public IReadOnlyList<byte> CheckCode { get; init; } = [];
    public BinaryRef? BinaryCoeff { get; init; }
    public IReadOnlyList<CoeffLocation> Locations { get; init; } = [];
    public int EncryptMode { get; init; }
    public ulong DecryptSize { get; init; }
}

/// <summary>Where one operation's coefficients sit inside the coeff binary (<c>Location</c>).</summary>
public sealed record CoeffLocation(string Name, ulong Offset, ulong Size);

/// <summary>A group of TPU commands (<c>CmdGroup</c>).</summary>
public sealed record CmdGroup
{
    public uint BdcNum { get; init; }
    public uint GdmaNum { get; init; }
    public BinaryRef? BinaryBdc { get; init; }
    public BinaryRef? BinaryGdma { get; init; }
    public uint BdcCmdByte { get; init; }
    public uint GdmaCmdByte { get; init; }
}

public sealed record CoreCommands
{
    public IReadOnlyList<CmdGroup> GdmaTiuCommands { get; init; } = [];
    public IReadOnlyList<BinaryRef> SdmaCommands { get; init; } = [];
    public IReadOnlyList<BinaryRef> HauCommands { get; init; } = [];
    public IReadOnlyList<BinaryRef> CdmaCommands { get; init; } = [];
}

public sealed record StageIr(uint IrInfoLen, int HeightHigh, int HeightLow, int WidthHigh, int WidthLow);

public sealed record CpuConst(string? Name, BinaryRef? ConstData, IReadOnlyList<byte> CheckCode);

public sealed record CpuParam
{
    public int OpType { get; init; }
    public BinaryRef? BinaryParam { get; init; }
    public IReadOnlyList<CpuConst> CpuConsts { get; init; } = [];
    public int IsCustom { get; init; }
}

public sealed record MergeParam(IReadOnlyList<IReadOnlyList<int>> OutputFrom);

public sealed record SwitchParam(IReadOnlyList<int> OutputFrom, IReadOnlyList<int> OutputBranch);

/// <summary>A TPU or CPU subnet of a stage (<c>SubNet</c>).</summary>
public sealed record SubNet
{
    /// <summary>0 tpu, 1 cpu.</summary>
    public int SubnetMode { get; init; }
    public IReadOnlyList<CmdGroup> CmdGroups { get; init; } = [];
    public IReadOnlyList<CpuParam> CpuParams { get; init; } = [];
    public IReadOnlyList<BModelTensor> InputTensors { get; init; } = [];
    public IReadOnlyList<BModelTensor> OutputTensors { get; init; } = [];
    public int IsDynamic { get; init; }
    public uint IrOffset { get; init; }
    public uint IrLen { get; init; }
    public int NDynamic { get; init; }
    public int HWDynamic { get; init; }
    public int Id { get; init; } = -1;
    public IReadOnlyList<int> NextSubnetIds { get; init; } = [];
    public MergeParam? MergeParam { get; init; }
    public SwitchParam? SwitchParam { get; init; }
    public IReadOnlyList<CoreCommands> CoreCommands { get; init; } = [];
}
