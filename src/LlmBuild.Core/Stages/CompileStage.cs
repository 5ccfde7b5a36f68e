using LlmBuild.Core.BModel;
using LlmBuild.Core.Chips;
using LlmBuild.Core.Codegen;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Graph;
using LlmBuild.Core.Numpy;
using LlmBuild.Core.Plan;

namespace LlmBuild.Core.Stages;

/// <summary>
/// Stage 4 (built-in backend): lowers one piece for the chip and writes its bmodel — one net named after the piece,
/// one stage with the weights as coefficient memory, the emulator program as the command stream and the planned
/// ctx/io memory; with NumDevice &gt; 1 a block piece is instead the 3·D sub-nets of <see cref="TensorParallel"/>.
/// Deterministic bytes: the Time field is fixed, everything else comes from the inputs.
/// </summary>
public static class CompileStage
{
    /// <summary>The bmodel Time field of built-in bmodels (never the clock, so rebuilds are byte-identical).</summary>
    public const string FixedTime = "LlmBuild built-in backend";

    public static void Run(ResolvedModel model, Piece piece, string mlirPath, string pieceNpzPath, string bmodelPath)
    {
        if (!File.Exists(mlirPath))
            throw new LlmBuildException(ErrorCodes.StaleIntermediate, $"Piece {piece.Name}: '{mlirPath}' is missing. Rebuild to regenerate the MLIR.", mlirPath);
        var (file, blob) = Build(model, piece, pieceNpzPath);
        BModelWriter.WriteFile(bmodelPath, file, blob);
    }

    /// <summary>
    /// Compiles a piece into a bmodel object model and its blob (without writing it). With NumDevice &gt; 1 a block piece
    /// becomes the 3·D cascade nets of <see cref="TensorParallel"/>; every other piece stays one net (device 0).
    /// </summary>
    public static (BModelFile File, BModelBlobBuilder Blob) Build(ResolvedModel model, Piece piece, string pieceNpzPath)
    {
        ChipProfile chip = ChipProfile.Get(model.Options.Chip);
        TensorParallel.Check(model);
        if (TensorParallel.IsSplit(model, piece)) return BuildSplit(model, piece, chip, pieceNpzPath);
        PieceGraph graph = PieceGraphBuilder.Build(model, piece);
        CompiledPiece compiled;
        using (var npz = new NpzReader(pieceNpzPath))
        {
            compiled = PieceCodegen.Compile(model, graph, chip, key => Read(npz, key, piece, pieceNpzPath));
        }
        DeviceMemoryBudget.Compute(model, chip, compiled.CtxSize + compiled.IoSize, piece.Name).Check(model, chip);
        return ToBModel(model, chip, compiled);
    }

    private static PieceTensorData Read(NpzReader npz, string key, Piece piece, string pieceNpzPath)
    {
        if (!npz.Contains(key))
            throw new LlmBuildException(ErrorCodes.PieceWeightsMismatch,
                $"'{pieceNpzPath}' has no entry '{key}' that piece {piece.Name} needs. Rebuild (or delete obj/) to regenerate it.", pieceNpzPath);
        NpzEntry e = npz.GetEntry(key);
        return new PieceTensorData(e.Descr, e.Shape, npz.ReadBytes(key));
    }

    /// <summary>The 3·D sub-nets of a tensor-parallel block, each reading its slices of the whole piece's weight file.</summary>
    private static (BModelFile File, BModelBlobBuilder Blob) BuildSplit(ResolvedModel model, Piece piece, ChipProfile chip, string pieceNpzPath)
    {
        int devices = TensorParallel.Devices(model);
        var nets = new List<(GraphShard Shard, CompiledPiece Compiled)>();
        using (var npz = new NpzReader(pieceNpzPath))
        {
            for (int step = 0; step < TensorParallel.Steps; step++)
                for (int device = 0; device < devices; device++)
                {
                    PieceGraph graph = PieceGraphBuilder.BuildShard(model, piece, step, device);
                    nets.Add((graph.Shard!, PieceCodegen.Compile(model, graph, chip, key => Read(npz, key, piece, pieceNpzPath))));
                }
        }
        for (int device = 0; device < devices; device++)
        {
            var largest = nets.Where(n => n.Shard.Device == device).MaxBy(n => n.Compiled.CtxSize + n.Compiled.IoSize);
            DeviceMemoryBudget.Compute(model, chip, largest.Compiled.CtxSize + largest.Compiled.IoSize, largest.Compiled.Name, device).Check(model, chip);
        }
        return ToBModel(model, chip, piece, nets);
    }
    /// <summary>Device address map of the built-in backend: coeff, then ctx, then io (tagged regions on BM1688-family chips).</summary>
    public static (ulong Coeff, ulong Ctx, ulong Io) Addresses(ChipProfile chip, long coeffSize, long ctxSize)
    {
        if (chip.TaggedAddresses) return (1UL << 40, 2UL << 40, 3UL << 40);
        ulong coeff = 0x1_0000_0000UL;
        ulong ctx = coeff + (ulong)chip.AlignUp(coeffSize);
        return (coeff, ctx, ctx + (ulong)chip.AlignUp(ctxSize));
    }

    public static (BModelFile File, BModelBlobBuilder Blob) ToBModel(ResolvedModel model, ChipProfile chip, CompiledPiece piece)
    {
        var blob = new BModelBlobBuilder();
        NetInfo net = ToNet(model, chip, blob, piece, null, (t, _) => t);
        return (ModelOf(model, chip, [net], piece.CtxSize), blob);
    }

    /// <summary>
    /// The bmodel of a tensor-parallel block: its sub-nets in the given (step-major) order, each with its cascade
    /// info; a sub-net's main-net inputs/outputs renamed {name}_{device} with hidden 3/4 and their index in the whole
    /// piece's input/output list, the inter-step tensors kept as they are (hidden 0).
    /// </summary>
    public static (BModelFile File, BModelBlobBuilder Blob) ToBModel(ResolvedModel model, ChipProfile chip, Piece piece,
        IReadOnlyList<(GraphShard Shard, CompiledPiece Compiled)> nets)
    {
        PieceGraph whole = PieceGraphBuilder.Build(model, piece);
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
            infos.Add(ToNet(model, chip, blob, compiled, cascade, Rename));
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
        Func<BModelTensor, bool, BModelTensor> rename)
    {
        var (coeffAddr, ctxAddr, ioAddr) = Addresses(chip, piece.Coeff.Length, piece.CtxSize);
        // A weightless sub-net (the reduce step) has no coefficient memory rather than an empty binary at offset 0,
        // which a loader keying blobs by offset could mistake for another net's. Whole pieces keep today's layout.
        CoeffMem? coeff = cascade is not null && piece.Coeff.Length == 0 ? null : blob.AddCoeff(piece.Coeff, coeffAddr, piece.CoeffLocations);
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
