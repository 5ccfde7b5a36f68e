using System.Globalization;
using System.Text;

namespace LlmBuild.Core.BModel;

/// <summary>
/// The bmodel flatbuffer layout: the field id of every field of every table (binary compatibility rests on these
/// ids, which follow TPU-MLIR's bmodel.fbs), and a FlatBuffers schema generated from the same definitions so tests
/// can decode our files with <c>flatc</c>.
/// </summary>
public static class BModelSchema
{
    internal static class Model { public const int Type = 0, Version = 1, Time = 2, Chip = 3, Net = 4, NeuronSize = 5, KernelModule = 6, DeviceNum = 7, CpuopModule = 8, BModelType = 9, LibBackend = 10, Count = 11; }
    internal static class Net { public const int Name = 0, NetStatic = 1, NetDynamic = 2, Parameter = 3, Cascade = 4, AddrMode = 5, Count = 6; }
    internal static class Cascade { public const int DeviceId = 0, Step = 1, MainName = 2, Count = 3; }
    internal static class Module { public const int FileName = 0, Binary = 1, Count = 2; }
    internal static class Param
    {
        public const int InputTensor = 0, OutputTensor = 1, CtxAddr = 2, CtxSize = 3, CoeffMem = 4, IsDynamic = 5, NDynamic = 6,
            HWDynamic = 7, CmdGroup = 8, NetProfile = 9, StageIr = 10, BinaryIr = 11, SubNet = 12, CpuMemSize = 13, CtxSizes = 14,
            NetStat = 15, CoreNum = 16, IoAddr = 17, IoSize = 18, TensorLoc = 19, DynamicCtxAddr = 20, DynamicCoeffOffset = 21,
            DynamicCombinedCoeffOffset = 22, Count = 23;
    }
    internal static class Tensor
    {
        public const int Name = 0, DataType = 1, GmemStmode = 2, DeviceAddr = 3, Size = 4, Shape = 5, MemType = 6, Scale = 7,
            CpuAddr = 8, PadH = 9, ZeroPoint = 10, Hidden = 11, Index = 12, Count = 13;
    }
    internal static class Shape { public const int Dim = 0, Count = 1; }
    internal static class Coeff { public const int Address = 0, CheckCode = 1, BinaryCoeff = 2, Location = 3, EncryptMode = 4, DecryptSize = 5, Count = 6; }
    internal static class Location { public const int Name = 0, Offset = 1, Size = 2, Count = 3; }
    internal static class Cmd { public const int BdcNum = 0, GdmaNum = 1, BinaryBdc = 2, BinaryGdma = 3, BdcCmdByte = 4, GdmaCmdByte = 5, Count = 6; }
    internal static class Core { public const int GdmaTiuCommands = 0, SdmaCommands = 1, HauCommands = 2, CdmaCommands = 3, Count = 4; }
    internal static class StageIr { public const int IrInfoLen = 0, HeightHigh = 1, HeightLow = 2, WidthHigh = 3, WidthLow = 4, Count = 5; }
    internal static class CpuConst { public const int Name = 0, ConstData = 1, CheckCode = 2, Count = 3; }
    internal static class CpuParam { public const int OpType = 0, BinaryParam = 1, CpuConst = 2, IsCustom = 3, Count = 4; }
    internal static class OutputFrom { public const int Indice = 0, Count = 1; }
    internal static class Merge { public const int OutputFrom = 0, Count = 1; }
    internal static class Switch { public const int OutputFrom = 0, OutputBranch = 1, Count = 2; }
    internal static class Sub
    {
        public const int SubnetMode = 0, CmdGroup = 1, CpuParam = 2, InputTensor = 3, OutputTensor = 4, IsDynamic = 5, IrOffset = 6,
            IrLen = 7, NDynamic = 8, HWDynamic = 9, Id = 10, NextSubnetIds = 11, MergeParam = 12, SwitchParam = 13, CoreCommands = 14, Count = 15;
    }

    /// <summary>One field of a table: its schema name and type, id, default (for scalars) and whether it is required.</summary>
    public sealed record FieldDef(string Name, string Type, int Id, string? Default = null, bool Required = false);

    public sealed record TableDef(string Name, IReadOnlyList<FieldDef> Fields);

    private static FieldDef F(string name, string type, int id, string? def = null) => new(name, type, id, def);
    private static FieldDef R(string name, string type, int id) => new(name, type, id, Required: true);

    /// <summary>Every table, children before parents (flatc accepts any order; this one reads top-down backwards).</summary>
    public static IReadOnlyList<TableDef> Tables { get; } =
    [
        new("Shape", [F("dim", "[uint64]", Shape.Dim)]),
        new("CmdGroup", [F("bdc_num", "uint32", Cmd.BdcNum), F("gdma_num", "uint32", Cmd.GdmaNum), F("binary_bdc", "Binary", Cmd.BinaryBdc),
            F("binary_gdma", "Binary", Cmd.BinaryGdma), F("bdc_cmd_byte", "uint32", Cmd.BdcCmdByte), F("gdma_cmd_byte", "uint32", Cmd.GdmaCmdByte)]),
        new("CoreCommands", [F("gdma_tiu_commands", "[CmdGroup]", Core.GdmaTiuCommands), F("sdma_commands", "[Binary]", Core.SdmaCommands),
            F("hau_commands", "[Binary]", Core.HauCommands), F("cdma_commands", "[Binary]", Core.CdmaCommands)]),
        new("StageIR", [F("ir_info_len", "uint32", StageIr.IrInfoLen), F("height_high", "int32", StageIr.HeightHigh), F("height_low", "int32", StageIr.HeightLow),
            F("width_high", "int32", StageIr.WidthHigh), F("width_low", "int32", StageIr.WidthLow)]),
        new("Location", [R("name", "string", Location.Name), F("offset", "uint64", Location.Offset), F("size", "uint64", Location.Size)]),
        new("CoeffMem", [F("address", "uint64", Coeff.Address), F("check_code", "[uint8]", Coeff.CheckCode), F("binary_coeff", "Binary", Coeff.BinaryCoeff),
            F("location", "[Location]", Coeff.Location), F("encrypt_mode", "int32", Coeff.EncryptMode), F("decrypt_size", "uint64", Coeff.DecryptSize)]),
        new("Tensor", [R("name", "string", Tensor.Name), F("data_type", "uint32", Tensor.DataType), F("gmem_stmode", "int32", Tensor.GmemStmode),
            F("device_addr", "uint64", Tensor.DeviceAddr), F("size", "uint64", Tensor.Size), F("shape", "[Shape]", Tensor.Shape),
            F("mem_type", "uint32", Tensor.MemType), F("scale", "float32", Tensor.Scale, "1.0"), F("cpu_addr", "uint32", Tensor.CpuAddr),
            F("pad_h", "uint32", Tensor.PadH), F("zero_point", "int32", Tensor.ZeroPoint, "0"), F("hidden", "int32", Tensor.Hidden),
            F("index", "int32", Tensor.Index)]),
        new("CpuConst", [F("name", "string", CpuConst.Name), F("const_data", "Binary", CpuConst.ConstData), F("check_code", "[uint8]", CpuConst.CheckCode)]),
        new("CpuParam", [F("op_type", "int32", CpuParam.OpType), F("binary_param", "Binary", CpuParam.BinaryParam), F("cpu_const", "[CpuConst]", CpuParam.CpuConst),
            F("is_custom", "int32", CpuParam.IsCustom)]),
        new("OutputFrom", [F("indice", "[int32]", OutputFrom.Indice)]),
        new("MergeParam", [F("output_from", "[OutputFrom]", Merge.OutputFrom)]),
        new("SwitchParam", [F("output_from", "[int32]", Switch.OutputFrom), F("output_branch", "[int32]", Switch.OutputBranch)]),
        new("SubNet", [F("subnet_mode", "int32", Sub.SubnetMode), F("cmd_group", "[CmdGroup]", Sub.CmdGroup), F("cpu_param", "[CpuParam]", Sub.CpuParam),
            F("input_tensor", "[Tensor]", Sub.InputTensor), F("output_tensor", "[Tensor]", Sub.OutputTensor), F("is_dynamic", "int32", Sub.IsDynamic),
            F("ir_offset", "uint32", Sub.IrOffset), F("ir_len", "uint32", Sub.IrLen), F("n_dynamic", "int32", Sub.NDynamic),
            F("h_w_dynamic", "int32", Sub.HWDynamic), F("id", "int32", Sub.Id, "-1"), F("next_subnet_ids", "[int32]", Sub.NextSubnetIds),
            F("merge_param", "MergeParam", Sub.MergeParam), F("switch_param", "SwitchParam", Sub.SwitchParam),
            F("core_commands", "[CoreCommands]", Sub.CoreCommands)]),
        new("NetStatic", []),
        new("NetDynamic", []),
        new("NetParameter", [R("input_tensor", "[Tensor]", Param.InputTensor), R("output_tensor", "[Tensor]", Param.OutputTensor),
            F("ctx_addr", "uint64", Param.CtxAddr), F("ctx_size", "uint64", Param.CtxSize), F("coeff_mem", "CoeffMem", Param.CoeffMem),
            F("is_dynamic", "int32", Param.IsDynamic), F("n_dynamic", "int32", Param.NDynamic), F("h_w_dynamic", "int32", Param.HWDynamic),
            F("cmd_group", "[CmdGroup]", Param.CmdGroup), F("net_profile", "Binary", Param.NetProfile), F("stage_ir", "[StageIR]", Param.StageIr),
            F("binary_ir", "Binary", Param.BinaryIr), F("sub_net", "[SubNet]", Param.SubNet), F("cpu_mem_size", "uint32", Param.CpuMemSize),
            F("ctx_sizes", "[uint64]", Param.CtxSizes), F("net_stat", "Binary", Param.NetStat), F("core_num", "uint32", Param.CoreNum),
            F("io_addr", "uint64", Param.IoAddr), F("io_size", "uint64", Param.IoSize), F("tensor_loc", "Binary", Param.TensorLoc),
            F("dynamic_ctx_addr", "uint64", Param.DynamicCtxAddr), F("dynamic_coeff_offset", "uint64", Param.DynamicCoeffOffset),
            F("dynamic_combined_coeff_offset", "uint64", Param.DynamicCombinedCoeffOffset)]),
        new("Cascade", [F("device_id", "uint32", Cascade.DeviceId), F("step", "uint32", Cascade.Step), F("main_name", "string", Cascade.MainName)]),
        new("Net", [R("name", "string", Net.Name), F("net_static", "[NetStatic]", Net.NetStatic), F("net_dynamic", "[NetDynamic]", Net.NetDynamic),
            F("parameter", "[NetParameter]", Net.Parameter), F("cascade", "Cascade", Net.Cascade), F("addr_mode", "int32", Net.AddrMode)]),
        new("KernelModule", [R("file_name", "string", Module.FileName), R("binary", "Binary", Module.Binary)]),
        new("CpuopModule", [R("file_name", "string", Module.FileName), R("binary", "Binary", Module.Binary)]),
        new("Model", [R("type", "string", Model.Type), R("version", "string", Model.Version), R("time", "string", Model.Time),
            R("chip", "string", Model.Chip), R("net", "[Net]", Model.Net), F("neuron_size", "uint64", Model.NeuronSize),
            F("kernel_module", "KernelModule", Model.KernelModule), F("device_num", "uint32", Model.DeviceNum),
            F("cpuop_module", "CpuopModule", Model.CpuopModule), F("bmodel_type", "uint32", Model.BModelType),
            F("lib_backend", "Binary", Model.LibBackend)]),
    ];

    /// <summary>The schema text (FlatBuffers IDL) for <c>flatc</c>, generated from <see cref="Tables"/>.</summary>
    public static string Text { get; } = BuildText();

    private static string BuildText()
    {
        var sb = new StringBuilder();
        sb.Append("// bmodel container schema, generated by LlmBuild from its table definitions (BModelSchema.cs).\n");
        sb.Append("namespace bmodel;\n\n");
        sb.Append("struct Binary {\n  start:uint64;\n  size:uint64;\n}\n");
        foreach (var table in Tables)
        {
            sb.Append(CultureInfo.InvariantCulture, $"\ntable {table.Name} {{\n");
            foreach (var f in table.Fields.OrderBy(f => f.Id))
            {
                sb.Append(CultureInfo.InvariantCulture, $"  {f.Name}:{f.Type}");
                if (f.Default is not null) sb.Append(" = ").Append(f.Default);
                sb.Append(CultureInfo.InvariantCulture, $" (id: {f.Id}{(f.Required ? ", required" : "")});\n");
            }
            sb.Append("}\n");
        }
        sb.Append("\nroot_type Model;\n");
        return sb.ToString();
    }
}
