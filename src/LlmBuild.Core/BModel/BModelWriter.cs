using System.Buffers.Binary;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.FlatBuffers;
using LlmBuild.Core.IO;
using S = LlmBuild.Core.BModel.BModelSchema;

namespace LlmBuild.Core.BModel;

/// <summary>The fixed 64-byte header that starts every bmodel.</summary>
public readonly record struct BModelHeader(uint Magic, uint HeaderSize, uint FlatBufferSize, uint BinarySize)
{
    public const uint ExpectedMagic = 0xFF55AAEE;
    public const int Size = 64;

    public void WriteTo(Span<byte> destination)
    {
        destination[..Size].Clear();
        BinaryPrimitives.WriteUInt32LittleEndian(destination, Magic);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[4..], HeaderSize);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[8..], FlatBufferSize);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[12..], BinarySize);
    }

    public static BModelHeader Parse(ReadOnlySpan<byte> source) => new(
        BinaryPrimitives.ReadUInt32LittleEndian(source), BinaryPrimitives.ReadUInt32LittleEndian(source[4..]),
        BinaryPrimitives.ReadUInt32LittleEndian(source[8..]), BinaryPrimitives.ReadUInt32LittleEndian(source[12..]));
}

/// <summary>
/// Writes a bmodel: the 64-byte header, the flatbuffer for <see cref="BModelFile"/>, then the blob laid out by a
/// <see cref="BModelBlobBuilder"/>. Same model and payloads → identical bytes.
/// </summary>
public static class BModelWriter
{
    /// <summary>Writes the bmodel to <paramref name="path"/> atomically (temp file + rename).</summary>
    public static void WriteFile(string path, BModelFile model, BModelBlobBuilder blob) => WriteFile(path, BuildFlatBuffer(model, blob), blob);

    /// <summary>Writes the bmodel whose flatbuffer <see cref="BuildFlatBuffer"/> made to <paramref name="path"/> atomically.</summary>
    internal static void WriteFile(string path, byte[] flatBuffer, BModelBlobBuilder blob) =>
        AtomicFile.Write(path, s => WriteParts(s, flatBuffer, blob));

    /// <summary>
    /// Turns the bmodel at <paramref name="path"/>, which already holds the blob's leading region (from
    /// <see cref="BModelBlobBuilder.Leading"/> to <see cref="BModelBlobBuilder.LeadingRegionEnd"/>) at the same file
    /// offsets, into the one <see cref="WriteFile(string, byte[], BModelBlobBuilder)"/> would write, writing everything
    /// but that region: header, flatbuffer and zeros before it, the rest of the blob after it. The file is moved aside
    /// meanwhile (<see cref="AtomicFile.Rewrite"/>): killed in between, the path has no file and the next build writes it whole.
    /// </summary>
    internal static void RewriteFile(string path, byte[] flatBuffer, BModelBlobBuilder blob)
    {
        ulong kept = blob.LeadingRegionEnd ?? throw new InvalidOperationException("The blob has no leading region to keep.");
        AtomicFile.Rewrite(path, s =>
        {
            RewriteProbe?.Invoke(s, "moved");
            s.Position = 0;
            WriteHead(s, flatBuffer, blob);
            RewriteProbe?.Invoke(s, "head");
            s.Write(new byte[(int)blob.Leading]);
            s.Position = BModelHeader.Size + flatBuffer.LongLength + (long)kept;
            blob.WriteTo(s, kept);
            RewriteProbe?.Invoke(s, "tail");
            s.SetLength(s.Position);
            RewriteProbe?.Invoke(s, "truncated");
        });
    }

    /// <summary>Tests only: called at each step of <see cref="RewriteFile"/> with the moved-aside file, to stop it there.</summary>
    internal static Action<FileStream, string>? RewriteProbe;

    public static void Write(BModelFile model, BModelBlobBuilder blob, Stream output) =>
        WriteParts(output, BuildFlatBuffer(model, blob), blob);

    public static byte[] ToBytes(BModelFile model, BModelBlobBuilder blob)
    {
        using var ms = new MemoryStream();
        Write(model, blob, ms);
        return ms.ToArray();
    }

    private static void WriteParts(Stream output, byte[] flatBuffer, BModelBlobBuilder blob)
    {
        WriteHead(output, flatBuffer, blob);
        blob.WriteTo(output);
    }

    /// <summary>The header and the flatbuffer.</summary>
    private static void WriteHead(Stream output, byte[] flatBuffer, BModelBlobBuilder blob)
    {
        Span<byte> header = stackalloc byte[BModelHeader.Size];
        // binary_size is a uint32 in the format; like the reference writer we store the low 32 bits of larger blobs.
        new BModelHeader(BModelHeader.ExpectedMagic, BModelHeader.Size, (uint)flatBuffer.Length, unchecked((uint)blob.Length)).WriteTo(header);
        output.Write(header);
        output.Write(flatBuffer);
    }

    /// <summary>The flatbuffer part alone. Checks the model and fills empty coefficient check codes from the blob.</summary>
    public static byte[] BuildFlatBuffer(BModelFile model, BModelBlobBuilder blob)
    {
        Validate(model, blob);
        return new Encoder(blob).Model(model);
    }

    private static void Validate(BModelFile model, BModelBlobBuilder blob)
    {
        static LlmBuildException Bad(string what) => new(ErrorCodes.BModelInvalid, $"Cannot write the bmodel: {what}.");
        if (model.Nets.Count == 0) throw Bad("it has no nets");
        if (string.IsNullOrEmpty(model.Chip)) throw Bad("the chip is empty");
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var net in model.Nets)
        {
            if (string.IsNullOrEmpty(net.Name)) throw Bad("a net has an empty name");
            if (!names.Add(net.Name)) throw Bad($"net '{net.Name}' appears twice; give it several stages instead");
            if (net.Stages.Count == 0) throw Bad($"net '{net.Name}' has no stages");
            foreach (var stage in net.Stages)
                foreach (var t in stage.InputTensors.Concat(stage.OutputTensors))
                    if (string.IsNullOrEmpty(t.Name)) throw Bad($"net '{net.Name}' has a tensor with an empty name");
        }
        foreach (var (where, binary) in BModelBinaries.All(model))
            if (!blob.Contains(binary))
                throw Bad($"{where} refers to {binary}, outside the {blob.Length}-byte blob; add payloads through BModelBlobBuilder.Add");
    }

    /// <summary>Builds the flatbuffer back to front: children before parents, 8-byte fields before 4-byte ones.</summary>
    private sealed class Encoder(BModelBlobBuilder blob)
    {
        private readonly FlatBufferBuilder _b = new(4096);

        public byte[] Model(BModelFile m)
        {
            int[] nets = m.Nets.Select(Net).ToArray();
            int type = _b.CreateString(m.Type), version = _b.CreateString(m.Version), time = _b.CreateString(m.Time), chip = _b.CreateString(m.Chip);
            int netVector = _b.CreateOffsetVector(nets);
            int kernel = m.KernelModule is null ? 0 : Module(m.KernelModule);
            int cpuop = m.CpuopModule is null ? 0 : Module(m.CpuopModule);
            _b.StartTable(S.Model.Count);
            _b.AddFieldUInt64(S.Model.NeuronSize, m.NeuronSize, 0);
            if (m.LibBackend is { } lib) _b.AddFieldStruct(S.Model.LibBackend, lib.Start, lib.Size);
            _b.AddFieldOffset(S.Model.Type, type);
            _b.AddFieldOffset(S.Model.Version, version);
            _b.AddFieldOffset(S.Model.Time, time);
            _b.AddFieldOffset(S.Model.Chip, chip);
            _b.AddFieldOffset(S.Model.Net, netVector);
            _b.AddFieldOffset(S.Model.KernelModule, kernel);
            _b.AddFieldUInt32(S.Model.DeviceNum, m.DeviceNum, 0);
            _b.AddFieldOffset(S.Model.CpuopModule, cpuop);
            _b.AddFieldUInt32(S.Model.BModelType, m.BModelType, 0);
            return _b.Finish(_b.EndTable());
        }

        private int Module(KernelModule k)
        {
            int name = _b.CreateString(k.FileName);
            _b.StartTable(S.Module.Count);
            _b.AddFieldStruct(S.Module.Binary, k.Binary.Start, k.Binary.Size);
            _b.AddFieldOffset(S.Module.FileName, name);
            return _b.EndTable();
        }

        private int Net(NetInfo n)
        {
            int name = _b.CreateString(n.Name);
            int parameters = _b.CreateOffsetVector(n.Stages.Select(Stage).ToArray());
            int cascade = 0;
            if (n.Cascade is { } c)
            {
                int main = c.MainName is null ? 0 : _b.CreateString(c.MainName);
                _b.StartTable(S.Cascade.Count);
                _b.AddFieldUInt32(S.Cascade.DeviceId, c.DeviceId, 0);
                _b.AddFieldUInt32(S.Cascade.Step, c.Step, 0);
                _b.AddFieldOffset(S.Cascade.MainName, main);
                cascade = _b.EndTable();
            }
            _b.StartTable(S.Net.Count);
            _b.AddFieldOffset(S.Net.Name, name);
            _b.AddFieldOffset(S.Net.Parameter, parameters);
            _b.AddFieldOffset(S.Net.Cascade, cascade);
            _b.AddFieldInt32(S.Net.AddrMode, n.AddrMode, 0);
            return _b.EndTable();
        }

        private int Stage(NetParameter p)
        {
            int inputs = Tensors(p.InputTensors, required: true);
            int outputs = Tensors(p.OutputTensors, required: true);
            int coeff = p.CoeffMem is null ? 0 : Coeff(p.CoeffMem);
            int cmd = CmdGroups(p.CmdGroups);
            int stageIr = 0;
            if (p.StageIrs.Count > 0) stageIr = _b.CreateOffsetVector(p.StageIrs.Select(StageIr).ToArray());
            int subNets = p.SubNets.Count == 0 ? 0 : _b.CreateOffsetVector(p.SubNets.Select(SubNet).ToArray());
            int ctxSizes = p.CtxSizes.Count == 0 ? 0 : _b.CreateVector(p.CtxSizes.ToArray().AsSpan());

            _b.StartTable(S.Param.Count);
            _b.AddFieldUInt64(S.Param.CtxAddr, p.CtxAddr, 0);
            _b.AddFieldUInt64(S.Param.CtxSize, p.CtxSize, 0);
            _b.AddFieldUInt64(S.Param.IoAddr, p.IoAddr, 0);
            _b.AddFieldUInt64(S.Param.IoSize, p.IoSize, 0);
            _b.AddFieldUInt64(S.Param.DynamicCtxAddr, p.DynamicCtxAddr, 0);
            _b.AddFieldUInt64(S.Param.DynamicCoeffOffset, p.DynamicCoeffOffset, 0);
            _b.AddFieldUInt64(S.Param.DynamicCombinedCoeffOffset, p.DynamicCombinedCoeffOffset, 0);
            if (p.NetProfile is { } prof) _b.AddFieldStruct(S.Param.NetProfile, prof.Start, prof.Size);
            if (p.BinaryIr is { } ir) _b.AddFieldStruct(S.Param.BinaryIr, ir.Start, ir.Size);
            if (p.NetStat is { } stat) _b.AddFieldStruct(S.Param.NetStat, stat.Start, stat.Size);
            if (p.TensorLoc is { } loc) _b.AddFieldStruct(S.Param.TensorLoc, loc.Start, loc.Size);
            _b.AddFieldOffset(S.Param.InputTensor, inputs);
            _b.AddFieldOffset(S.Param.OutputTensor, outputs);
            _b.AddFieldOffset(S.Param.CoeffMem, coeff);
            _b.AddFieldInt32(S.Param.IsDynamic, p.IsDynamic ? 1 : 0, 0);
            _b.AddFieldInt32(S.Param.NDynamic, p.NDynamic, 0);
            _b.AddFieldInt32(S.Param.HWDynamic, p.HWDynamic, 0);
            _b.AddFieldOffset(S.Param.CmdGroup, cmd);
            _b.AddFieldOffset(S.Param.StageIr, stageIr);
            _b.AddFieldOffset(S.Param.SubNet, subNets);
            _b.AddFieldUInt32(S.Param.CpuMemSize, p.CpuMemSize, 0);
            _b.AddFieldOffset(S.Param.CtxSizes, ctxSizes);
            _b.AddFieldUInt32(S.Param.CoreNum, p.CoreNum, 0);
            return _b.EndTable();
        }

        private int StageIr(StageIr s)
        {
            _b.StartTable(S.StageIr.Count);
            _b.AddFieldUInt32(S.StageIr.IrInfoLen, s.IrInfoLen, 0);
            _b.AddFieldInt32(S.StageIr.HeightHigh, s.HeightHigh, 0);
            _b.AddFieldInt32(S.StageIr.HeightLow, s.HeightLow, 0);
            _b.AddFieldInt32(S.StageIr.WidthHigh, s.WidthHigh, 0);
            _b.AddFieldInt32(S.StageIr.WidthLow, s.WidthLow, 0);
            return _b.EndTable();
        }

        /// <returns>The vector's offset; 0 (absent) for an empty optional vector.</returns>
        private int Tensors(IReadOnlyList<BModelTensor> tensors, bool required)
        {
            if (tensors.Count == 0 && !required) return 0;
            return _b.CreateOffsetVector(tensors.Select(Tensor).ToArray());
        }

        private int Tensor(BModelTensor t)
        {
            int name = _b.CreateString(t.Name);
            int shapes = 0;
            if (t.Shapes.Count > 0)
            {
                var shapeTables = new int[t.Shapes.Count];
                for (int i = 0; i < shapeTables.Length; i++)
                {
                    ulong[] dims = t.Shapes[i].Select(d => unchecked((ulong)d)).ToArray();
                    int dimVector = _b.CreateVector(dims.AsSpan());
                    _b.StartTable(S.Shape.Count);
                    _b.AddFieldOffset(S.Shape.Dim, dimVector);
                    shapeTables[i] = _b.EndTable();
                }
                shapes = _b.CreateOffsetVector(shapeTables);
            }
            _b.StartTable(S.Tensor.Count);
            _b.AddFieldUInt64(S.Tensor.DeviceAddr, t.DeviceAddr, 0);
            _b.AddFieldUInt64(S.Tensor.Size, t.Size, 0);
            _b.AddFieldOffset(S.Tensor.Name, name);
            _b.AddFieldUInt32(S.Tensor.DataType, (uint)t.DataType, 0);
            _b.AddFieldInt32(S.Tensor.GmemStmode, t.GmemStmode, 0);
            _b.AddFieldOffset(S.Tensor.Shape, shapes);
            _b.AddFieldUInt32(S.Tensor.MemType, t.MemType, 0);
            _b.AddFieldFloat(S.Tensor.Scale, t.Scale, 1f);
            _b.AddFieldUInt32(S.Tensor.CpuAddr, t.CpuAddr, 0);
            _b.AddFieldUInt32(S.Tensor.PadH, t.PadH, 0);
            _b.AddFieldInt32(S.Tensor.ZeroPoint, t.ZeroPoint, 0);
            _b.AddFieldInt32(S.Tensor.Hidden, t.Hidden, 0);
            _b.AddFieldInt32(S.Tensor.Index, t.Index, 0);
            return _b.EndTable();
        }

        private int Coeff(CoeffMem c)
        {
            IReadOnlyList<byte> checkCode = c.CheckCode;
            if (checkCode.Count == 0 && c.BinaryCoeff is { } bin) checkCode = blob.Sha256(bin);
            int check = checkCode.Count == 0 ? 0 : _b.CreateVector(checkCode.ToArray().AsSpan());
            int locations = 0;
            if (c.Locations.Count > 0)
            {
                var tables = new int[c.Locations.Count];
                for (int i = 0; i < tables.Length; i++)
                {
                    var l = c.Locations[i];
                    int name = _b.CreateString(l.Name);
                    _b.StartTable(S.Location.Count);
                    _b.AddFieldUInt64(S.Location.Offset, l.Offset, 0);
                    _b.AddFieldUInt64(S.Location.Size, l.Size, 0);
                    _b.AddFieldOffset(S.Location.Name, name);
                    tables[i] = _b.EndTable();
                }
                locations = _b.CreateOffsetVector(tables);
            }
            _b.StartTable(S.Coeff.Count);
            _b.AddFieldUInt64(S.Coeff.Address, c.Address, 0);
            _b.AddFieldUInt64(S.Coeff.DecryptSize, c.DecryptSize, 0);
            if (c.BinaryCoeff is { } b) _b.AddFieldStruct(S.Coeff.BinaryCoeff, b.Start, b.Size);
            _b.AddFieldOffset(S.Coeff.CheckCode, check);
            _b.AddFieldOffset(S.Coeff.Location, locations);
            _b.AddFieldInt32(S.Coeff.EncryptMode, c.EncryptMode, 0);
            return _b.EndTable();
        }

        private int CmdGroups(IReadOnlyList<CmdGroup> groups) =>
            groups.Count == 0 ? 0 : _b.CreateOffsetVector(groups.Select(CmdGroup).ToArray());

        private int CmdGroup(CmdGroup g)
        {
            _b.StartTable(S.Cmd.Count);
            if (g.BinaryBdc is { } bdc) _b.AddFieldStruct(S.Cmd.BinaryBdc, bdc.Start, bdc.Size);
            if (g.BinaryGdma is { } gdma) _b.AddFieldStruct(S.Cmd.BinaryGdma, gdma.Start, gdma.Size);
            _b.AddFieldUInt32(S.Cmd.BdcNum, g.BdcNum, 0);
            _b.AddFieldUInt32(S.Cmd.GdmaNum, g.GdmaNum, 0);
            _b.AddFieldUInt32(S.Cmd.BdcCmdByte, g.BdcCmdByte, 0);
            _b.AddFieldUInt32(S.Cmd.GdmaCmdByte, g.GdmaCmdByte, 0);
            return _b.EndTable();
        }

        private int Binaries(IReadOnlyList<BinaryRef> binaries) =>
            binaries.Count == 0 ? 0 : _b.CreateStructVector(binaries.Select(r => (r.Start, r.Size)).ToArray());

        private int Ints(IReadOnlyList<int> values) => values.Count == 0 ? 0 : _b.CreateVector(values.ToArray().AsSpan());

        private int SubNet(SubNet s)
        {
            int cmd = CmdGroups(s.CmdGroups);
            int cpu = s.CpuParams.Count == 0 ? 0 : _b.CreateOffsetVector(s.CpuParams.Select(CpuParam).ToArray());
            int inputs = Tensors(s.InputTensors, required: false);
            int outputs = Tensors(s.OutputTensors, required: false);
            int next = Ints(s.NextSubnetIds);
            int merge = 0;
            if (s.MergeParam is { } m)
            {
                var froms = new int[m.OutputFrom.Count];
                for (int i = 0; i < froms.Length; i++)
                {
                    int indice = Ints(m.OutputFrom[i]);
                    _b.StartTable(S.OutputFrom.Count);
                    _b.AddFieldOffset(S.OutputFrom.Indice, indice);
                    froms[i] = _b.EndTable();
                }
                int fromVector = froms.Length == 0 ? 0 : _b.CreateOffsetVector(froms);
                _b.StartTable(S.Merge.Count);
                _b.AddFieldOffset(S.Merge.OutputFrom, fromVector);
                merge = _b.EndTable();
            }
            int sw = 0;
            if (s.SwitchParam is { } w)
            {
                int from = Ints(w.OutputFrom), branch = Ints(w.OutputBranch);
                _b.StartTable(S.Switch.Count);
                _b.AddFieldOffset(S.Switch.OutputFrom, from);
                _b.AddFieldOffset(S.Switch.OutputBranch, branch);
                sw = _b.EndTable();
            }
            int core = 0;
            if (s.CoreCommands.Count > 0)
            {
                var cores = new int[s.CoreCommands.Count];
                for (int i = 0; i < cores.Length; i++)
                {
                    var c = s.CoreCommands[i];
                    int gdmaTiu = CmdGroups(c.GdmaTiuCommands), sdma = Binaries(c.SdmaCommands), hau = Binaries(c.HauCommands), cdma = Binaries(c.CdmaCommands);
                    _b.StartTable(S.Core.Count);
                    _b.AddFieldOffset(S.Core.GdmaTiuCommands, gdmaTiu);
                    _b.AddFieldOffset(S.Core.SdmaCommands, sdma);
                    _b.AddFieldOffset(S.Core.HauCommands, hau);
                    _b.AddFieldOffset(S.Core.CdmaCommands, cdma);
                    cores[i] = _b.EndTable();
                }
                core = _b.CreateOffsetVector(cores);
            }
            _b.StartTable(S.Sub.Count);
            _b.AddFieldInt32(S.Sub.SubnetMode, s.SubnetMode, 0);
            _b.AddFieldOffset(S.Sub.CmdGroup, cmd);
            _b.AddFieldOffset(S.Sub.CpuParam, cpu);
            _b.AddFieldOffset(S.Sub.InputTensor, inputs);
            _b.AddFieldOffset(S.Sub.OutputTensor, outputs);
            _b.AddFieldInt32(S.Sub.IsDynamic, s.IsDynamic, 0);
            _b.AddFieldUInt32(S.Sub.IrOffset, s.IrOffset, 0);
            _b.AddFieldUInt32(S.Sub.IrLen, s.IrLen, 0);
            _b.AddFieldInt32(S.Sub.NDynamic, s.NDynamic, 0);
            _b.AddFieldInt32(S.Sub.HWDynamic, s.HWDynamic, 0);
            _b.AddFieldInt32(S.Sub.Id, s.Id, -1);
            _b.AddFieldOffset(S.Sub.NextSubnetIds, next);
            _b.AddFieldOffset(S.Sub.MergeParam, merge);
            _b.AddFieldOffset(S.Sub.SwitchParam, sw);
            _b.AddFieldOffset(S.Sub.CoreCommands, core);
            return _b.EndTable();
        }

        private int CpuParam(CpuParam p)
        {
            int consts = 0;
            if (p.CpuConsts.Count > 0)
            {
                var tables = new int[p.CpuConsts.Count];
                for (int i = 0; i < tables.Length; i++)
                {
                    var c = p.CpuConsts[i];
                    int name = c.Name is null ? 0 : _b.CreateString(c.Name);
                    int check = c.CheckCode.Count == 0 ? 0 : _b.CreateVector(c.CheckCode.ToArray().AsSpan());
                    _b.StartTable(S.CpuConst.Count);
                    if (c.ConstData is { } d) _b.AddFieldStruct(S.CpuConst.ConstData, d.Start, d.Size);
                    _b.AddFieldOffset(S.CpuConst.Name, name);
                    _b.AddFieldOffset(S.CpuConst.CheckCode, check);
                    tables[i] = _b.EndTable();
                }
                consts = _b.CreateOffsetVector(tables);
            }
            _b.StartTable(S.CpuParam.Count);
            if (p.BinaryParam is { } bp) _b.AddFieldStruct(S.CpuParam.BinaryParam, bp.Start, bp.Size);
            _b.AddFieldInt32(S.CpuParam.OpType, p.OpType, 0);
            _b.AddFieldOffset(S.CpuParam.CpuConst, consts);
            _b.AddFieldInt32(S.CpuParam.IsCustom, p.IsCustom, 0);
            return _b.EndTable();
        }
    }
}
