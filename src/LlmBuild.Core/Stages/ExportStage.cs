using System.Security.Cryptography;
using LlmBuild.Core.Codegen;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Graph;
using LlmBuild.Core.IO;
using LlmBuild.Core.Mlir;
using LlmBuild.Core.Numpy;
using LlmBuild.Core.Plan;

namespace LlmBuild.Core.Stages;

/// <summary>
/// Stage 3. Builds a piece's graph and writes its MLIR module. A piece with a weight owner names the owner's weight
/// file (weights/&lt;owner&gt;_top_weights.npz, by a path relative to the module), which holds the owner's weights and
/// the constants of all its pieces: block_i and block_cache_i name one file, as TPU-MLIR's own converter lays them out,
/// so no weight byte is copied. A piece without weights gets its own weight file beside the module with its constants.
/// Either way a module names exactly one weight file, and model_deploy.py run in the module's folder finds it.
/// </summary>
public static class ExportStage
{
    /// <param name="ownerNpz">The owner's weight file, or null for a piece without weights.</param>
    /// <param name="pieceNpzPath">The piece's own weight file, written only for a piece without an owner (deleted otherwise).</param>
    public static void Run(ResolvedModel model, Piece piece, string? ownerNpz, string mlirPath, string pieceNpzPath)
    {
        PieceGraph graph = PieceGraphBuilder.Build(model, piece);
        if (ownerNpz is null)
        {
            if (graph.Weights.Count > 0) throw new InvalidOperationException($"Piece {graph.Name} uses weights but has no weight owner.");
            AtomicFile.Write(pieceNpzPath, stream =>
            {
                using var npz = new NpzWriter(stream, leaveOpen: true);
                GraphNpz.AddConstants(npz, graph);
                npz.Finish();
            });
            // The module is written once the weight file it names is in place.
            AtomicFile.WaitUntilInPlace(pieceNpzPath);
            AtomicFile.WriteAllText(mlirPath, MlirWriter.Write(graph, Path.GetFileName(pieceNpzPath)));
            return;
        }
        CheckOwnerFile(graph, ownerNpz);
        // A piece weight file left by an older layout would be a second copy of the weights.
        if (File.Exists(pieceNpzPath)) AtomicFile.Delete(pieceNpzPath);
        string dir = Path.GetDirectoryName(Path.GetFullPath(mlirPath))!;
        AtomicFile.WriteAllText(mlirPath, MlirWriter.Write(graph, PieceCoeffReferences.RelativePath(dir, ownerNpz)));
    }

    /// <summary>
    /// Exports a piece as a self-contained folder, as TPU-MLIR hands one module to model_deploy.py elsewhere: its own
    /// weight file beside the module holds a copy of the owner's entries it uses plus its constants. The build does not
    /// use this form (it would copy every weight once per piece); tools and tests that move one piece around do.
    /// </summary>
    public static void RunSelfContained(ResolvedModel model, Piece piece, string? ownerNpz, string mlirPath, string pieceNpzPath)
    {
        PieceGraph graph = PieceGraphBuilder.Build(model, piece);
        if (graph.Weights.Count > 0 && ownerNpz is null)
            throw new InvalidOperationException($"Piece {graph.Name} uses weights but has no weight owner.");
        if (ownerNpz is not null) CheckOwnerFile(graph, ownerNpz);
        using NpzReader? owner = ownerNpz is null ? null : new NpzReader(ownerNpz);
        AtomicFile.Write(pieceNpzPath, stream =>
        {
            using var npz = new NpzWriter(stream, leaveOpen: true);
            foreach (GraphWeight w in graph.Weights) npz.CopyEntry(owner!, w.Key);
            GraphNpz.AddConstants(npz, graph);
            npz.Finish();
        });
        AtomicFile.WriteAllText(mlirPath, MlirWriter.Write(graph, Path.GetFileName(pieceNpzPath)));
    }

    /// <summary>The weight file a piece's module names: its owner's, or its own for a piece without weights.</summary>
    public static string WeightFile(string? ownerNpz, string pieceNpzPath) => ownerNpz ?? pieceNpzPath;

    /// <summary>Every entry the module will read is in the owner's file with the dtype and shape the graph declares.</summary>
    private static void CheckOwnerFile(PieceGraph graph, string ownerNpz)
    {
        using var owner = new NpzReader(ownerNpz);
        var needed = graph.Weights.Select(w => (w.Key, GraphNpz.Descr(w.DType), w.StoredShape))
            .Concat(graph.Constants.Select(c => (c.Key, GraphNpz.Descr(c.DType), c.Shape)));
        foreach (var (key, descr, shape) in needed)
        {
            if (!owner.Contains(key))
                throw new LlmBuildException(ErrorCodes.StaleIntermediate,
                    $"'{ownerNpz}' has no entry '{key}' that piece {graph.Name} needs. Rebuild (or delete obj/) to regenerate the weights.", ownerNpz);
            NpzEntry e = owner.GetEntry(key);
            if (e.Descr != descr || !e.Shape.SequenceEqual(shape))
                throw new LlmBuildException(ErrorCodes.StaleIntermediate,
                    $"'{ownerNpz}' entry '{key}' is {e.Descr}{e.Header.ShapeText} but piece {graph.Name} expects {descr}[{string.Join(", ", shape)}]. Rebuild to regenerate the weights.", ownerNpz);
        }
    }

    /// <summary>
    /// The constants of every piece whose module names <paramref name="owner"/>'s weight file, once per key (block_i
    /// and block_cache_i share their RoPE tables). Two pieces giving one key different values is LLMB0432.
    /// </summary>
    public static IReadOnlyList<GraphConstant> OwnerConstants(ResolvedModel model, string owner)
    {
        var byKey = new SortedDictionary<string, (GraphConstant Constant, string Piece)>(StringComparer.Ordinal);
        foreach (Piece piece in model.Pieces.Where(p => p.WeightOwner == owner))
            foreach (GraphConstant c in PieceGraphBuilder.Build(model, piece).Constants)
            {
                if (!byKey.TryGetValue(c.Key, out var seen)) { byKey[c.Key] = (c, piece.Name); continue; }
                if (seen.Constant.DType != c.DType || !seen.Constant.Shape.SequenceEqual(c.Shape) || !seen.Constant.Data.AsSpan().SequenceEqual(c.Data))
                    throw new LlmBuildException(ErrorCodes.OwnerConstantConflict,
                        $"Pieces {seen.Piece} and {piece.Name} both name weight file {owner}_top_weights.npz but give constant '{c.Key}' different values; give one of them another key.");
            }
        return byKey.Values.Select(v => v.Constant).ToArray();
    }

    /// <summary>A digest of <see cref="OwnerConstants"/> for the owner's spec: the weight file is rewritten when it changes.</summary>
    public static string OwnerConstantsDigest(ResolvedModel model, string owner)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (GraphConstant c in OwnerConstants(model, owner))
        {
            hash.AppendData(System.Text.Encoding.UTF8.GetBytes($"{c.Key}|{c.DType}|{string.Join(",", c.Shape)}|"));
            hash.AppendData(System.Runtime.InteropServices.MemoryMarshal.AsBytes(c.Data.AsSpan()));
        }
        return Convert.ToHexString(hash.GetHashAndReset());
    }
}
