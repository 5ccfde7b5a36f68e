using Microsoft.Build.Framework;
using LlmBuild.Core.IO;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Stages;

namespace LlmBuild.Tasks;

/// <summary>Stage 3: writes each out-of-date piece's MLIR module (and, for a piece without weights, its constants file).</summary>
public sealed class ExportLlmMlir : LlmTask
{
    [Required] public string ResolvedFile { get; set; } = "";
    /// <summary>Identity = piece name; metadata Spec, OwnerNpz (empty: no weights), Mlir.</summary>
    [Required] public ITaskItem[] Pieces { get; set; } = [];
    public ITaskItem[]? SharedInputs { get; set; }

    protected override void ExecuteCore()
    {
        ResolvedModel model = ResolvedModel.Load(ResolvedFile);
        // A piece with weights writes only its module (naming the owner's file); one without writes its own weight file.
        string PieceNpz(ITaskItem p) => System.IO.Path.Combine(System.IO.Path.GetDirectoryName(p.Path("Mlir"))!, p.ItemSpec + "_top_weights.npz");
        string[] Outputs(ITaskItem p) => p.OptionalPath("OwnerNpz") is null ? [p.Path("Mlir"), PieceNpz(p)] : [p.Path("Mlir")];
        DeleteStaleTemporariesBeside(Pieces.SelectMany(p => new[] { p.Path("Mlir"), PieceNpz(p) }));
        var shared = SharedInputs.Paths().ToArray();
        var stale = Pieces.Where(p => !Freshness.IsUpToDate(
            Outputs(p),
            [p.Path("Spec"), .. p.OptionalPath("OwnerNpz") is { } npz ? new[] { npz } : [], .. shared])).ToList();
        foreach (var p in Pieces.Except(stale)) LogPieceUpToDate(p.ItemSpec);
        // The pieces' small outputs are fsynced concurrently, each before its rename (ConcurrentCommits).
        ConcurrentCommits.Run(() =>
            RunPieces(stale, p => p.ItemSpec, (p, log) =>
                ExportStage.Run(model, model.Piece(p.ItemSpec), p.OptionalPath("OwnerNpz"), p.Path("Mlir"), PieceNpz(p))));
    }
}
