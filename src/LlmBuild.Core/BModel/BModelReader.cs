using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.FlatBuffers;
using S = LlmBuild.Core.BModel.BModelSchema;

namespace LlmBuild.Core.BModel;

/// <summary>
/// Reads bmodels. The header, every flatbuffer offset and every binary reference are checked, so a truncated or
/// corrupted file raises a coded <see cref="LlmBuildException"/> (LLMB0401-0404), never an out-of-range read.
/// </summary>
public static class BModelReader
{
    /// <summary>Opens a bmodel file, memory-mapped; dispose the container to unmap it.</summary>
    public static BModelContainer Read(string path) => BModelContainer.Open(path);

    /// <summary>Parses a bmodel held in memory; the container keeps a reference to <paramref name="bytes"/>.</summary>
    public static BModelContainer Read(ReadOnlyMemory<byte> bytes, string? name = null) => BModelContainer.FromMemory(bytes, name);

    /// <summary>Reads only the model (no binaries) from a bmodel in memory.</summary>
    public static BModelFile ReadModel(ReadOnlySpan<byte> bytes, string? name = null)
    {
        var header = ParseHeader(bytes, bytes.Length, name ?? "<memory>", out long blobLength);
        byte[] flatBuffer = bytes.Slice((int)header.HeaderSize, (int)header.FlatBufferSize).ToArray();
        return Decode(flatBuffer, blobLength, name ?? "<memory>");
    }

    /// <summary>Checks the 64-byte header against the file length; returns it with the length of the blob after the flatbuffer.</summary>
    internal static BModelHeader ParseHeader(ReadOnlySpan<byte> start, long fileLength, string file, out long blobLength)
    {
        if (fileLength < BModelHeader.Size || start.Length < BModelHeader.Size)
            throw new LlmBuildException(ErrorCodes.BModelBadHeader, $"'{file}' is {fileLength} bytes, shorter than the {BModelHeader.Size}-byte bmodel header; it is not a bmodel or was truncated.", file);
        var h = BModelHeader.Parse(start);
        if (h.Magic != BModelHeader.ExpectedMagic)
            throw new LlmBuildException(ErrorCodes.BModelBadHeader, $"'{file}' is not a bmodel: magic 0x{h.Magic:X8}, expected 0x{BModelHeader.ExpectedMagic:X8}.", file);
        if (h.HeaderSize < BModelHeader.Size || h.HeaderSize > fileLength)
            throw new LlmBuildException(ErrorCodes.BModelBadHeader, $"'{file}' has an invalid header size {h.HeaderSize} (expected {BModelHeader.Size}); the file is corrupt.", file);
        if (h.FlatBufferSize < 8 || h.FlatBufferSize > int.MaxValue)
            throw new LlmBuildException(ErrorCodes.BModelBadHeader, $"'{file}' has an invalid flatbuffer size {h.FlatBufferSize} in its header; the file is corrupt.", file);
        long blobStart = (long)h.HeaderSize + h.FlatBufferSize;
        if (blobStart > fileLength || fileLength - blobStart < h.BinarySize)
            throw new LlmBuildException(ErrorCodes.BModelTruncated,
                $"'{file}' is {fileLength} bytes but its header describes {blobStart + h.BinarySize} (header {h.HeaderSize} + flatbuffer {h.FlatBufferSize} + binary {h.BinarySize}); the file was truncated, rebuild it.", file);
        blobLength = fileLength - blobStart;
        return h;
    }

    /// <summary>Decodes the flatbuffer and checks every binary reference against <paramref name="blobLength"/>.</summary>
    internal static BModelFile Decode(byte[] flatBuffer, long blobLength, string file)
    {
        try
        {
            var model = new Decoder(new FlatBufferReader(flatBuffer)).Model();
            foreach (var (where, b) in BModelBinaries.All(model))
                if (b.Start > (ulong)blobLength || b.Size > (ulong)blobLength - b.Start)
                    throw new LlmBuildException(ErrorCodes.BModelBinaryOutOfRange,
                        $"'{file}': {where} refers to bytes [{b.Start}, {b.Start + b.Size}) but the binary blob is {blobLength} bytes; the file is corrupt or truncated.", file);
            return model;
        }
        catch (FlatBufferFormatException e)
        {
            throw new LlmBuildException(ErrorCodes.BModelCorrupt, $"'{file}' has a corrupt flatbuffer: {e.Message}. Rebuild the bmodel.", file, e);
        }
    }

    private sealed class Decoder(FlatBufferReader r)
    {
        private static BinaryRef? Bin((ulong, ulong)? v) => v is { } x ? new BinaryRef(x.Item1, x.Item2) : null;

        public BModelFile Model()
        {
            var t = r.Root();
            var nets = t.GetRequiredVector(S.Model.Net, 4, "net");
            return new BModelFile
            {
                Type = t.GetRequiredString(S.Model.Type, "type"),
                Version = t.GetRequiredString(S.Model.Version, "version"),
                Time = t.GetRequiredString(S.Model.Time, "time"),
                Chip = t.GetRequiredString(S.Model.Chip, "chip"),
                Nets = Enumerable.Range(0, nets.Count).Select(i => Net(nets.Table(i))).ToArray(),
                NeuronSize = t.GetUInt64(S.Model.NeuronSize),
                KernelModule = t.GetTable(S.Model.KernelModule, "kernel_module") is { } k ? Module(k) : null,
                DeviceNum = t.GetUInt32(S.Model.DeviceNum),
                CpuopModule = t.GetTable(S.Model.CpuopModule, "cpuop_module") is { } c ? Module(c) : null,
                BModelType = t.GetUInt32(S.Model.BModelType),
                LibBackend = Bin(t.GetStruct2xU64(S.Model.LibBackend)),
            };
        }

        private static KernelModule Module(FbTable t) => new(
            t.GetRequiredString(S.Module.FileName, "file_name"),
            Bin(t.GetStruct2xU64(S.Module.Binary)) ?? throw new FlatBufferFormatException($"{t.Name}: required field 'binary' is missing"));

        private NetInfo Net(FbTable t)
        {
            var stages = t.GetVector(S.Net.Parameter, 4, "parameter");
            Cascade? cascade = null;
            if (t.GetTable(S.Net.Cascade, "cascade") is { } c)
                cascade = new Cascade(c.GetUInt32(S.Cascade.DeviceId), c.GetUInt32(S.Cascade.Step), c.GetString(S.Cascade.MainName, "main_name"));
            return new NetInfo
            {
                Name = t.GetRequiredString(S.Net.Name, "name"),
                Stages = stages is { } v ? Enumerable.Range(0, v.Count).Select(i => Stage(v.Table(i))).ToArray() : [],
                Cascade = cascade,
                AddrMode = t.GetInt32(S.Net.AddrMode),
            };
        }

        private NetParameter Stage(FbTable t) => new()
        {
            InputTensors = Tensors(t.GetRequiredVector(S.Param.InputTensor, 4, "input_tensor")),
            OutputTensors = Tensors(t.GetRequiredVector(S.Param.OutputTensor, 4, "output_tensor")),
            CtxAddr = t.GetUInt64(S.Param.CtxAddr),
            CtxSize = t.GetUInt64(S.Param.CtxSize),
            CoeffMem = t.GetTable(S.Param.CoeffMem, "coeff_mem") is { } c ? Coeff(c) : null,
            IsDynamic = t.GetInt32(S.Param.IsDynamic) != 0,
            NDynamic = t.GetInt32(S.Param.NDynamic),
            HWDynamic = t.GetInt32(S.Param.HWDynamic),
            CmdGroups = CmdGroups(t.GetVector(S.Param.CmdGroup, 4, "cmd_group")),
            NetProfile = Bin(t.GetStruct2xU64(S.Param.NetProfile)),
            StageIrs = Tables(t.GetVector(S.Param.StageIr, 4, "stage_ir"), s => new StageIr(
                s.GetUInt32(S.StageIr.IrInfoLen), s.GetInt32(S.StageIr.HeightHigh), s.GetInt32(S.StageIr.HeightLow),
                s.GetInt32(S.StageIr.WidthHigh), s.GetInt32(S.StageIr.WidthLow))),
            BinaryIr = Bin(t.GetStruct2xU64(S.Param.BinaryIr)),
            SubNets = Tables(t.GetVector(S.Param.SubNet, 4, "sub_net"), SubNet),
            CpuMemSize = t.GetUInt32(S.Param.CpuMemSize),
            CtxSizes = U64s(t.GetVector(S.Param.CtxSizes, 8, "ctx_sizes")),
            NetStat = Bin(t.GetStruct2xU64(S.Param.NetStat)),
            CoreNum = t.GetUInt32(S.Param.CoreNum),
            IoAddr = t.GetUInt64(S.Param.IoAddr),
            IoSize = t.GetUInt64(S.Param.IoSize),
            TensorLoc = Bin(t.GetStruct2xU64(S.Param.TensorLoc)),
            DynamicCtxAddr = t.GetUInt64(S.Param.DynamicCtxAddr),
            DynamicCoeffOffset = t.GetUInt64(S.Param.DynamicCoeffOffset),
            DynamicCombinedCoeffOffset = t.GetUInt64(S.Param.DynamicCombinedCoeffOffset),
        };

        private static T[] Tables<T>(FbVector? v, Func<FbTable, T> read) =>
            v is { } x ? Enumerable.Range(0, x.Count).Select(i => read(x.Table(i))).ToArray() : [];

        private static ulong[] U64s(FbVector? v) => v is { } x ? Enumerable.Range(0, x.Count).Select(x.UInt64).ToArray() : [];
        private static int[] I32s(FbVector? v) => v is { } x ? Enumerable.Range(0, x.Count).Select(x.Int32).ToArray() : [];
        private static byte[] U8s(FbVector? v) => v is { } x ? x.Bytes().ToArray() : [];

        private static BinaryRef[] Binaries(FbVector? v) =>
            v is { } x ? Enumerable.Range(0, x.Count).Select(i => { var s = x.Struct2xU64(i); return new BinaryRef(s.First, s.Second); }).ToArray() : [];

        private BModelTensor[] Tensors(FbVector? v) => Tables(v, Tensor);

        private static BModelTensor Tensor(FbTable t) => new()
        {
            Name = t.GetRequiredString(S.Tensor.Name, "name"),
            DataType = (BModelDataType)t.GetUInt32(S.Tensor.DataType),
            GmemStmode = t.GetInt32(S.Tensor.GmemStmode),
            DeviceAddr = t.GetUInt64(S.Tensor.DeviceAddr),
            Size = t.GetUInt64(S.Tensor.Size),
            Shapes = Tables(t.GetVector(S.Tensor.Shape, 4, "shape"),
                s => (IReadOnlyList<long>)U64s(s.GetVector(S.Shape.Dim, 8, "dim")).Select(d => unchecked((long)d)).ToArray()),
            MemType = t.GetUInt32(S.Tensor.MemType),
            Scale = t.GetFloat(S.Tensor.Scale, 1f),
            CpuAddr = t.GetUInt32(S.Tensor.CpuAddr),
            PadH = t.GetUInt32(S.Tensor.PadH),
            ZeroPoint = t.GetInt32(S.Tensor.ZeroPoint),
            Hidden = t.GetInt32(S.Tensor.Hidden),
            Index = t.GetInt32(S.Tensor.Index),
        };

        private static CoeffMem Coeff(FbTable t) => new()
        {
            Address = t.GetUInt64(S.Coeff.Address),
            CheckCode = U8s(t.GetVector(S.Coeff.CheckCode, 1, "check_code")),
            BinaryCoeff = Bin(t.GetStruct2xU64(S.Coeff.BinaryCoeff)),
            Locations = Tables(t.GetVector(S.Coeff.Location, 4, "location"), l => new CoeffLocation(
                l.GetRequiredString(S.Location.Name, "name"), l.GetUInt64(S.Location.Offset), l.GetUInt64(S.Location.Size))),
            EncryptMode = t.GetInt32(S.Coeff.EncryptMode),
            DecryptSize = t.GetUInt64(S.Coeff.DecryptSize),
        };

        private static CmdGroup[] CmdGroups(FbVector? v) => Tables(v, g => new CmdGroup
        {
            BdcNum = g.GetUInt32(S.Cmd.BdcNum),
            GdmaNum = g.GetUInt32(S.Cmd.GdmaNum),
            BinaryBdc = Bin(g.GetStruct2xU64(S.Cmd.BinaryBdc)),
            BinaryGdma = Bin(g.GetStruct2xU64(S.Cmd.BinaryGdma)),
            BdcCmdByte = g.GetUInt32(S.Cmd.BdcCmdByte),
            GdmaCmdByte = g.GetUInt32(S.Cmd.GdmaCmdByte),
        });

        private SubNet SubNet(FbTable t) => new()
        {
            SubnetMode = t.GetInt32(S.Sub.SubnetMode),
            CmdGroups = CmdGroups(t.GetVector(S.Sub.CmdGroup, 4, "cmd_group")),
            CpuParams = Tables(t.GetVector(S.Sub.CpuParam, 4, "cpu_param"), p => new CpuParam
            {
                OpType = p.GetInt32(S.CpuParam.OpType),
                BinaryParam = Bin(p.GetStruct2xU64(S.CpuParam.BinaryParam)),
                CpuConsts = Tables(p.GetVector(S.CpuParam.CpuConst, 4, "cpu_const"), c => new CpuConst(
                    c.GetString(S.CpuConst.Name, "name"), Bin(c.GetStruct2xU64(S.CpuConst.ConstData)), U8s(c.GetVector(S.CpuConst.CheckCode, 1, "check_code")))),
                IsCustom = p.GetInt32(S.CpuParam.IsCustom),
            }),
            InputTensors = Tensors(t.GetVector(S.Sub.InputTensor, 4, "input_tensor")),
            OutputTensors = Tensors(t.GetVector(S.Sub.OutputTensor, 4, "output_tensor")),
            IsDynamic = t.GetInt32(S.Sub.IsDynamic),
            IrOffset = t.GetUInt32(S.Sub.IrOffset),
            IrLen = t.GetUInt32(S.Sub.IrLen),
            NDynamic = t.GetInt32(S.Sub.NDynamic),
            HWDynamic = t.GetInt32(S.Sub.HWDynamic),
            Id = t.GetInt32(S.Sub.Id, -1),
            NextSubnetIds = I32s(t.GetVector(S.Sub.NextSubnetIds, 4, "next_subnet_ids")),
            MergeParam = t.GetTable(S.Sub.MergeParam, "merge_param") is { } m
                ? new MergeParam(Tables(m.GetVector(S.Merge.OutputFrom, 4, "output_from"), f => (IReadOnlyList<int>)I32s(f.GetVector(S.OutputFrom.Indice, 4, "indice"))))
                : null,
            SwitchParam = t.GetTable(S.Sub.SwitchParam, "switch_param") is { } w
                ? new SwitchParam(I32s(w.GetVector(S.Switch.OutputFrom, 4, "output_from")), I32s(w.GetVector(S.Switch.OutputBranch, 4, "output_branch")))
                : null,
            CoreCommands = Tables(t.GetVector(S.Sub.CoreCommands, 4, "core_commands"), c => new CoreCommands
            {
                GdmaTiuCommands = CmdGroups(c.GetVector(S.Core.GdmaTiuCommands, 4, "gdma_tiu_commands")),
                SdmaCommands = Binaries(c.GetVector(S.Core.SdmaCommands, 16, "sdma_commands")),
                HauCommands = Binaries(c.GetVector(S.Core.HauCommands, 16, "hau_commands")),
                CdmaCommands = Binaries(c.GetVector(S.Core.CdmaCommands, 16, "cdma_commands")),
            }),
        };
    }
}
