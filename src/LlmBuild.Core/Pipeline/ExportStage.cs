using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Graph;
using LlmBuild.Core.IO;
using LlmBuild.Core.Mlir;
using LlmBuild.Core.Numpy;
using LlmBuild.Core.Quantization;

namespace LlmBuild.Core.Pipeline;

/// <summary>
/// Stage 3. Builds a piece's graph and writes its MLIR module plus the module's own weight file: the owner
/// weights the piece uses (copied raw from the owner npz) and the option-dependent constants (RoPE tables, masks).
/// Like TPU-MLIR's layout, each mlir/&lt;piece&gt;/ folder is self-contained for model_deploy.py.
/// </summary>
public static class ExportStage
{
    public static void Run(ResolvedModel model, Piece piece, string? ownerNpz, string mlirPath, string pieceNpzPath)
    {
        PieceGraph graph = PieceGraphBuilder.Build(model, piece);
        WritePieceWeights(graph, ownerNpz, pieceNpzPath);
        AtomicFile.WriteAllText(mlirPath, MlirWriter.Write(graph, Path.GetFileName(pieceNpzPath)));
    }

    /// <summary>The npz descr a graph dtype is stored with (bf16 as its raw 16-bit pattern).</summary>
    public static string NpyDescr(GraphDType dtype) => dtype switch
    {
        GraphDType.F32 => NpyFormat.Float32,
        GraphDType.BF16 => NpyFormat.UInt16,
        GraphDType.F16 => NpyFormat.Float16,
        GraphDType.SI32 => NpyFormat.Int32,
        GraphDType.UI8 => NpyFormat.UInt8,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype)),
    };

    private static void WritePieceWeights(PieceGraph graph, string? ownerNpz, string path)
    {
        if (graph.Weights.Count > 0 && ownerNpz is null)
            throw new InvalidOperationException($"Piece {graph.Name} uses weights but has no weight owner.");
        using NpzReader? owner = ownerNpz is null ? null : new NpzReader(ownerNpz);
        AtomicFile.Write(path, stream =>
        {
            using var npz = new NpzWriter(stream, leaveOpen: true);
            foreach (GraphWeight w in graph.Weights)
            {
                if (!owner!.Contains(w.Key))
                    throw new LlmBuildException(ErrorCodes.StaleIntermediate,
                        $"'{ownerNpz}' has no entry '{w.Key}' that piece {graph.Name} needs. Rebuild (or delete obj/) to regenerate the weights.", ownerNpz);
                NpzEntry e = owner.GetEntry(w.Key);
                if (e.Descr != NpyDescr(w.DType) || !e.Shape.SequenceEqual(w.Shape))
                    throw new LlmBuildException(ErrorCodes.StaleIntermediate,
                        $"'{ownerNpz}' entry '{w.Key}' is {e.Descr}{e.Header.ShapeText} but piece {graph.Name} expects {NpyDescr(w.DType)}[{string.Join(", ", w.Shape)}]. Rebuild to regenerate the weights.", ownerNpz);
                npz.CopyEntry(owner, w.Key);
            }
            foreach (GraphConstant c in graph.Constants) AddConstant(npz, c);
            npz.Finish();
        });
    }

    private static void AddConstant(NpzWriter npz, GraphConstant c)
    {
        switch (c.DType)
        {
            case GraphDType.F32:
                npz.AddFloat32(c.Key, c.Data, c.Shape);
                break;
            case GraphDType.BF16:
            {
                var bits = new ushort[c.Data.Length];
                FloatFormats.FloatToBFloat16(c.Data, bits);
                npz.AddBFloat16(c.Key, bits, c.Shape);
                break;
            }
            case GraphDType.F16:
            {
                var bits = new ushort[c.Data.Length];
                FloatFormats.FloatToHalf(c.Data, bits);
                npz.AddHalf(c.Key, bits, c.Shape);
                break;
            }
            case GraphDType.SI32:
                npz.AddInt32(c.Key, c.Data.Select(v => checked((int)v)).ToArray(), c.Shape);
                break;
            case GraphDType.UI8:
                npz.AddUInt8(c.Key, c.Data.Select(v => checked((byte)v)).ToArray(), c.Shape);
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(c), c.DType, "constant dtype");
        }
    }
}
