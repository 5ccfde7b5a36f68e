using LlmBuild.Core.BModel;
using LlmBuild.Core.Chips;
using LlmBuild.Core.Codegen;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Graph;
using LlmBuild.Core.Mlir;
using LlmBuild.Core.Numpy;
using LlmBuild.Core.Plan;

namespace LlmBuild.Core.Stages;

/// <summary>
/// Stage 4 (built-in backend): compiles one piece's MLIR module — the only input besides the weight file it names,
/// exactly what TPU-MLIR's model_deploy.py receives — for the chip and writes its bmodel: one net named after the
/// piece, one stage with the weights as coefficient memory, the emulator program as the command stream and the planned
/// ctx/io memory; with NumDevice &gt; 1 a block module is split into the 3·D sub-nets of <see cref="TensorParallel"/>
/// (<see cref="TensorParallelShards"/>). From the resolved model it takes only the deploy options (chip, NumCore,
/// NumDevice, Quantize's activation dtype, the device-memory budget), as model_deploy.py takes them from its flags.
/// Deterministic bytes: the Time field is fixed, everything else comes from the inputs.
/// </summary>
public static class CompileStage
{
    /// <summary>The bmodel Time field of built-in bmodels (never the clock, so rebuilds are byte-identical).</summary>
    public const string FixedTime = "LlmBuild built-in backend";

    /// <param name="pieceNpzPath">The weight file the build declares as the piece's input; the module must name it.</param>
    public static void Run(ResolvedModel model, Piece piece, string mlirPath, string pieceNpzPath, string bmodelPath)
    {
        var (file, blob) = Build(model, piece, mlirPath, pieceNpzPath);
        BModelWriter.WriteFile(bmodelPath, file, blob);
    }

    /// <summary>
    /// What the build runs: compiles the piece like <see cref="Run"/> but writes its bmodel without the coefficient
    /// bytes, referencing them in the weight file instead (<see cref="PieceCoeffReferences"/>), so every weight byte
    /// stays stored once in obj/. A piece whose weights cannot be referenced (a compressed weight file) is written whole.
    /// </summary>
    /// <returns>True when the bmodel references its coefficients.</returns>
    public static bool RunReferencing(ResolvedModel model, Piece piece, string mlirPath, string weightFilePath, string bmodelPath)
    {
        // A piece compiled again from the same weights (SeqLength changed) does not hash them again.
        var (file, blob, compiled) = PieceCoeffReferences.UsingHashesOf(bmodelPath, () => BuildCore(model, piece, mlirPath, weightFilePath, referenceCoeff: true));
        if (compiled.Any(c => c.CoeffSize > 0 && c.CoeffSources is null))
        {
            (file, blob, _) = BuildCore(model, piece, mlirPath, weightFilePath, referenceCoeff: false);
            BModelWriter.WriteFile(bmodelPath, file, blob);
            return false;
        }
        var coefficients = new List<CoeffReference>();
        for (int i = 0; i < file.Nets.Count; i++)
        {
            if (file.Nets[i].Stages[0].CoeffMem is not { } coeff || compiled[i].CoeffSize == 0) continue;
            coefficients.Add(new CoeffReference(BModelBinaries.CoeffWhere(file.Nets[i].Name, 0), compiled[i].CoeffSize,
                Convert.ToHexString(coeff.CheckCode.ToArray()), compiled[i].CoeffSources!));
        }
        var references = new PieceCoeffReferences(
            PieceCoeffReferences.RelativePath(Path.GetDirectoryName(Path.GetFullPath(bmodelPath))!, weightFilePath),
            compiled.SelectMany(c => c.CoeffEntries).DistinctBy(e => e.Key).OrderBy(e => e.Key, StringComparer.Ordinal).ToArray(),
            coefficients);
        byte[] bmodel = BModelWriter.ToBytes(file, blob);
        byte[] trailer = references.ToTrailer();
        IO.AtomicFile.Write(bmodelPath, s => { s.Write(bmodel); s.Write(trailer); });
        return true;
    }

    /// <summary>
    /// Compiles a piece's module into a bmodel object model and its blob (without writing it). With NumDevice &gt; 1 a
    /// block becomes the 3·D cascade nets of <see cref="TensorParallel"/>; every other piece stays one net (device 0).
    /// </summary>
    /// <param name="expectedNpzPath">When given, the weight file the module must name (the build's declared input).</param>
    public static (BModelFile File, BModelBlobBuilder Blob) Build(ResolvedModel model, Piece piece, string mlirPath, string? expectedNpzPath = null)
    {
        var (file, blob, _) = BuildCore(model, piece, mlirPath, expectedNpzPath, referenceCoeff: false);
        return (file, blob);
    }

    private static (BModelFile File, BModelBlobBuilder Blob, IReadOnlyList<CompiledPiece> Compiled) BuildCore(ResolvedModel model, Piece piece,
        string mlirPath, string? expectedNpzPath, bool referenceCoeff)
    {
        if (!File.Exists(mlirPath))
            throw new LlmBuildException(ErrorCodes.StaleIntermediate, $"Piece {piece.Name}: '{mlirPath}' is missing. Rebuild to regenerate the MLIR.", mlirPath);
        MlirPieceModule module = MlirReader.ReadFile(mlirPath);
        PieceGraph graph = module.Graph;
        if (graph.Name != piece.Name)
            throw new LlmBuildException(ErrorCodes.StaleIntermediate,
                $"'{mlirPath}' is the module of {graph.Name}, not of piece {piece.Name}. Rebuild to regenerate the MLIR.", mlirPath);
        string npzPath = Path.GetFullPath(Path.Combine(Path.GetDirectoryName(Path.GetFullPath(mlirPath))!, module.WeightFile));
        if (expectedNpzPath is not null && !string.Equals(Path.GetFullPath(expectedNpzPath), npzPath, StringComparison.Ordinal))
            throw new LlmBuildException(ErrorCodes.StaleIntermediate,
                $"'{mlirPath}' names the weight file '{module.WeightFile}', but the build gives piece {piece.Name} '{expectedNpzPath}'. Rebuild to regenerate the MLIR.", mlirPath);
        if (!File.Exists(npzPath))
            throw new LlmBuildException(ErrorCodes.StaleIntermediate,
                $"'{mlirPath}' names the weight file '{module.WeightFile}', which is missing ('{npzPath}'). Rebuild to regenerate it.", mlirPath);
        try
        {
            return CompileCore(model, graph, npzPath, referenceCoeff);
        }
        catch (Exception e) when (e is InvalidOperationException or ArgumentException or KeyNotFoundException or IndexOutOfRangeException)
        {
            // The module is an input like any other: one the lowering cannot follow (an op without an attribute it
            // needs, too few operands, a shape that does not fit) is a coded error naming the module, not a crash.
            throw new LlmBuildException(ErrorCodes.CodegenUnsupported,
                $"Piece {piece.Name}: '{mlirPath}' describes a graph the built-in backend cannot lower: {e.Message} Re-export the piece, or fix the module.", mlirPath, e);
        }
    }

    /// <summary>Compiles a piece graph read from its module, reading weights from <paramref name="npzPath"/>.</summary>
    public static (BModelFile File, BModelBlobBuilder Blob) Compile(ResolvedModel model, PieceGraph graph, string npzPath)
    {
        var (file, blob, _) = CompileCore(model, graph, npzPath, referenceCoeff: false);
        return (file, blob);
    }

    private static (BModelFile File, BModelBlobBuilder Blob, IReadOnlyList<CompiledPiece> Compiled) CompileCore(ResolvedModel model, PieceGraph graph,
        string npzPath, bool referenceCoeff)
    {
        ChipProfile chip = ChipProfile.Get(model.Options.Chip);
        TensorParallel.Check(model);
        if (TensorParallel.Devices(model) > 1 && TensorParallel.IsBlock(graph.Piece.Kind)) return BuildSplit(model, graph, chip, npzPath, referenceCoeff);
        CompiledPiece compiled;
        using (var npz = new NpzReader(npzPath))
        {
            // Weights are referenced (not read) when the piece will reference them; constants go into the program.
            var constants = graph.Constants.Select(c => c.Key).ToHashSet(StringComparer.Ordinal);
            compiled = PieceCodegen.Compile(model, graph, chip, key => Read(npz, key, graph.Name, npzPath, referenceCoeff && !constants.Contains(key)));
        }
        compiled = Hashed(compiled, npzPath);
        DeviceMemoryBudget.Compute(model, chip, compiled.CtxSize + compiled.IoSize, graph.Name).Check(model, chip);
        var (file, blob) = ToBModel(model, chip, compiled, referenceCoeff);
        return (file, blob, [compiled]);
    }

    /// <summary>A piece compiled from deferred reads gets its coefficients' sha256 from the referenced bytes, streamed.</summary>
    private static CompiledPiece Hashed(CompiledPiece piece, string npzPath) =>
        piece.Coeff.Length == 0 && piece.CoeffSize > 0 && piece.CoeffSources is { } sources
            ? piece with { CoeffSha256 = PieceCoeffReferences.Hash(npzPath, piece.CoeffEntries, sources, piece.CoeffSize) }
            : piece;

    private static PieceTensorData Read(NpzReader npz, string key, string piece, string npzPath, bool defer = false)
    {
        if (!npz.Contains(key))
            throw new LlmBuildException(ErrorCodes.PieceWeightsMismatch,
                $"'{npzPath}' has no entry '{key}' that piece {piece} needs. Rebuild (or delete obj/) to regenerate it.", npzPath);
        NpzEntry e = npz.GetEntry(key);
        // The build's pieces reference stored entries: their bytes are not read here (only hashed, streamed, later).
        if (defer && e.Stored) return new PieceTensorData(e.Descr, e.Shape, ReadOnlyMemory<byte>.Empty) { Source = new WeightFileEntry(key, e.Crc32, e.DataLength), Deferred = true };
        return new PieceTensorData(e.Descr, e.Shape, npz.ReadBytes(key))
        {
            Source = e.Stored ? new WeightFileEntry(key, e.Crc32, e.DataLength) : null,
        };
    }

    /// <summary>The 3·D sub-nets of a tensor-parallel block, each reading its slices of the whole piece's weight file.</summary>
    private static (BModelFile File, BModelBlobBuilder Blob, IReadOnlyList<CompiledPiece> Compiled) BuildSplit(ResolvedModel model, PieceGraph whole,
        ChipProfile chip, string npzPath, bool referenceCoeff)
    {
        int devices = TensorParallel.Devices(model);
        var nets = new List<(GraphShard Shard, CompiledPiece Compiled)>();
        var constants = whole.Constants.Select(c => c.Key).ToHashSet(StringComparer.Ordinal);
        using (var npz = new NpzReader(npzPath))
        {
            for (int step = 0; step < TensorParallel.Steps; step++)
                for (int device = 0; device < devices; device++)
                {
                    PieceGraph graph = TensorParallelShards.Shard(whole, step, device, devices);
                    nets.Add((graph.Shard!, Hashed(PieceCodegen.Compile(model, graph, chip, key => Read(npz, key, whole.Name, npzPath, referenceCoeff && !constants.Contains(key))), npzPath)));
                }
        }
        for (int device = 0; device < devices; device++)
        {
            var largest = nets.Where(n => n.Shard.Device == device).MaxBy(n => n.Compiled.CtxSize + n.Compiled.IoSize);
            DeviceMemoryBudget.Compute(model, chip, largest.Compiled.CtxSize + largest.Compiled.IoSize, largest.Compiled.Name, device).Check(model, chip);
        }
        var (file, blob) = ToBModel(model, chip, whole, nets, referenceCoeff);
        return (file, blob, nets.Select(n => n.Compiled).ToArray());
    }

    /// <summary>Device address map of the built-in backend: coeff, then ctx, then io (tagged regions on BM1688-family chips).</summary>
    public static (ulong Coeff, ulong Ctx, ulong Io) Addresses(ChipProfile chip, long coeffSize, long ctxSize)
    {
        if (chip.TaggedAddresses) return (1UL << 40, 2UL << 40, 3UL << 40);
        ulong coeff = 0x1_0000_0000UL;
        ulong ctx = coeff + (ulong)chip.AlignUp(coeffSize);
        return (coeff, ctx, ctx + (ulong)chip.AlignUp(ctxSize));
    }

    /// <param name="referenceCoeff">Leave the coefficient bytes out (an empty binary with the real check code): the build's piece bmodels reference them.</param>
    public static (BModelFile File, BModelBlobBuilder Blob) ToBModel(ResolvedModel model, ChipProfile chip, CompiledPiece piece, bool referenceCoeff = false)
    {
        var blob = new BModelBlobBuilder();
        NetInfo net = ToNet(model, chip, blob, piece, null, (t, _) => t, referenceCoeff);
        return (ModelOf(model, chip, [net], piece.CtxSize), blob);
    }

    /// <summary>
    /// The bmodel of a tensor-parallel block: its sub-nets in the given (step-major) order, each with its cascade
    /// info; a sub-net's main-net inputs/outputs renamed {name}_{device} with hidden 3/4 and their index in the whole
    /// piece's input/output list, the inter-step tensors kept as they are (hidden 0).
    /// </summary>
    public static (BModelFile File, BModelBlobBuilder Blob) ToBModel(ResolvedModel model, ChipProfile chip, PieceGraph whole,
        IReadOnlyList<(GraphShard Shard, CompiledPiece Compiled)> nets, bool referenceCoeff = false)
    {
        Piece piece = whole.Piece;
        var blob = new BModelBlobBuilder();
        var infos = new List<NetInfo>();
        foreach (var (shard, compiled) in nets)
        {
            BModelTensor Rename(BModelTensor t, bool isOutput)
            {
                var contract = isOutput ? whole.Outputs : whole.Inputs;
                int index = contract.ToList().IndexOf(t.Name);
                if (index < 0)
                {
                    if (TensorParallel.IsContractTensor(t.Name))
                        throw new InvalidOperationException($"{compiled.Name}: '{t.Name}' is not {(isOutput ? "an output" : "an input")} of {piece.Name}.");
                    return t;
                }
                return t with
                {
                    Name = TensorParallel.DeviceTensorName(t.Name, shard.Device),
                    Hidden = isOutput ? TensorParallel.HiddenOutput : TensorParallel.HiddenInput,
                    Index = index,
                };
            }
            var cascade = new Cascade((uint)shard.Device, (uint)shard.Step, piece.Name);
            infos.Add(ToNet(model, chip, blob, compiled, cascade, Rename, referenceCoeff));
        }
        return (ModelOf(model, chip, infos, nets.Max(n => n.Compiled.CtxSize)), blob);
    }

    private static BModelFile ModelOf(ResolvedModel model, ChipProfile chip, IReadOnlyList<NetInfo> nets, long neuronSize) => new()
    {
        Time = FixedTime,
        Chip = chip.BModelChip,
        Nets = nets,
        NeuronSize = (ulong)neuronSize,
        DeviceNum = (uint)TensorParallel.Devices(model),
    };

    private static NetInfo ToNet(ResolvedModel model, ChipProfile chip, BModelBlobBuilder blob, CompiledPiece piece, Cascade? cascade,
        Func<BModelTensor, bool, BModelTensor> rename, bool referenceCoeff)
    {
        long coeffSize = Math.Max(piece.Coeff.Length, piece.CoeffSize);
        var (coeffAddr, ctxAddr, ioAddr) = Addresses(chip, coeffSize, piece.CtxSize);
        // A weightless sub-net (the reduce step) has no coefficient memory rather than an empty binary at offset 0,
        // which a loader keying blobs by offset could mistake for another net's. Whole pieces keep today's layout.
        CoeffMem? coeff = cascade is not null && coeffSize == 0 ? null
            : referenceCoeff && coeffSize > 0
                ? new CoeffMem { Address = coeffAddr, CheckCode = piece.CoeffSha256 ?? System.Security.Cryptography.SHA256.HashData(piece.Coeff), BinaryCoeff = new BinaryRef(0, 0), Locations = piece.CoeffLocations }
                : blob.AddCoeff(piece.Coeff, coeffAddr, piece.CoeffLocations);
        byte[] program = piece.Program.Encode();
        var cmd = new CmdGroup
        {
            BdcNum = (uint)piece.Program.Instructions.Count,
            BinaryBdc = blob.Add(program),
            BdcCmdByte = (uint)program.Length,
            GdmaNum = piece.Constants.Length > 0 ? 1u : 0u,
            BinaryGdma = blob.Add(piece.Constants),
            GdmaCmdByte = (uint)piece.Constants.Length,
        };
        BModelTensor Tensor(CompiledIo io, bool isOutput) => rename(new BModelTensor
        {
            Name = io.Name,
            DataType = io.DType,
            DeviceAddr = ioAddr + (ulong)io.Offset,
            Size = (ulong)io.Bytes,
            Shapes = [io.Shape],
        }, isOutput);
        var stage = new NetParameter
        {
            InputTensors = piece.Inputs.Select(io => Tensor(io, false)).ToArray(),
            OutputTensors = piece.Outputs.Select(io => Tensor(io, true)).ToArray(),
            CtxAddr = ctxAddr,
            CtxSize = (ulong)piece.CtxSize,
            CoeffMem = coeff,
            CmdGroups = [cmd],
            CoreNum = (uint)Math.Max(1, model.Options.NumCore),
            IoAddr = ioAddr,
            IoSize = (ulong)piece.IoSize,
            CtxSizes = [(ulong)piece.CtxSize],
        };
        return new NetInfo { Name = piece.Name, Stages = [stage], AddrMode = 1, Cascade = cascade };
    }
}
