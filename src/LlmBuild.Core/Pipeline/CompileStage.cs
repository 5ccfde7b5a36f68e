using LlmBuild.Core.BModel;
using LlmBuild.Core.Chips;
using LlmBuild.Core.Codegen;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Graph;
using LlmBuild.Core.Numpy;

namespace LlmBuild.Core.Pipeline;

/// <summary>
/// Stage 4 (built-in backend): lowers one piece for the chip and writes its bmodel — one net named after the piece,
/// one stage with the weights as coefficient memory, the emulator program as the command stream and the planned
/// ctx/io memory. Deterministic bytes: the Time field is fixed, everything else comes from the inputs.
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

    /// <summary>Compiles a piece into a bmodel object model and its blob (without writing it).</summary>
    public static (BModelFile File, BModelBlobBuilder Blob) Build(ResolvedModel model, Piece piece, string pieceNpzPath)
    {
        ChipProfile chip = ChipProfile.Get(model.Options.Chip);
        PieceGraph graph = PieceGraphBuilder.Build(model, piece);
        CompiledPiece compiled;
        using (var npz = new NpzReader(pieceNpzPath))
        {
            compiled = PieceCodegen.Compile(model, graph, chip, key =>
            {
                if (!npz.Contains(key))
                    throw new LlmBuildException(ErrorCodes.PieceWeightsMismatch,
                        $"'{pieceNpzPath}' has no entry '{key}' that piece {piece.Name} needs. Rebuild (or delete obj/) to regenerate it.", pieceNpzPath);
                NpzEntry e = npz.GetEntry(key);
                return new PieceTensorData(e.Descr, e.Shape, npz.ReadBytes(key));
            });
        }
        DeviceMemoryBudget.Compute(model, chip, compiled.CtxSize + compiled.IoSize, piece.Name).Check(model, chip);
        return ToBModel(model, chip, compiled);
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
        var (coeffAddr, ctxAddr, ioAddr) = Addresses(chip, piece.Coeff.Length, piece.CtxSize);
        CoeffMem coeff = blob.AddCoeff(piece.Coeff, coeffAddr, piece.CoeffLocations);
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
        BModelTensor Tensor(CompiledIo io) => new()
        {
            Name = io.Name,
            DataType = io.DType,
            DeviceAddr = ioAddr + (ulong)io.Offset,
            Size = (ulong)io.Bytes,
            Shapes = [io.Shape],
        };
        var stage = new NetParameter
        {
            InputTensors = piece.Inputs.Select(Tensor).ToArray(),
            OutputTensors = piece.Outputs.Select(Tensor).ToArray(),
            CtxAddr = ctxAddr,
            CtxSize = (ulong)piece.CtxSize,
            CoeffMem = coeff,
            CmdGroups = [cmd],
            CoreNum = (uint)Math.Max(1, model.Options.NumCore),
            IoAddr = ioAddr,
            IoSize = (ulong)piece.IoSize,
            CtxSizes = [(ulong)piece.CtxSize],
        };
        var file = new BModelFile
        {
            Time = FixedTime,
            Chip = chip.BModelChip,
            Nets = [new NetInfo { Name = piece.Name, Stages = [stage], AddrMode = 1 }],
            NeuronSize = (ulong)piece.CtxSize,
            DeviceNum = (uint)Math.Max(1, model.Options.NumDevice),
        };
        return (file, blob);
    }
}
