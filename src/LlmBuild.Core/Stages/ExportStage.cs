using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Graph;
using LlmBuild.Core.IO;
using LlmBuild.Core.Mlir;
using LlmBuild.Core.Numpy;
using LlmBuild.Core.Plan;

namespace LlmBuild.Core.Stages;

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
                if (e.Descr != GraphNpz.Descr(w.DType) || !e.Shape.SequenceEqual(w.Shape))
                    throw new LlmBuildException(ErrorCodes.StaleIntermediate,
                        $"'{ownerNpz}' entry '{w.Key}' is {e.Descr}{e.Header.ShapeText} but piece {graph.Name} expects {GraphNpz.Descr(w.DType)}[{string.Join(", ", w.Shape)}]. Rebuild to regenerate the weights.", ownerNpz);
                npz.CopyEntry(owner, w.Key);
            }
            GraphNpz.AddConstants(npz, graph);
            npz.Finish();
        });
    }
}
