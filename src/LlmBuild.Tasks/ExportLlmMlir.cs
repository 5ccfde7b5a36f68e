using Microsoft.Build.Framework;
using LlmBuild.Core.IO;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Stages;

namespace LlmBuild.Tasks;

/// <summary>Stage 3: writes each out-of-date piece's MLIR module and its weight file.</summary>
public sealed class ExportLlmMlir : LlmTask
{
    [Required] public string ResolvedFile { get; set; } = "";
    /// <summary>Identity = piece name; metadata Spec, OwnerNpz (empty: no weights), Mlir, PieceNpz.</summary>
    [Required] public ITaskItem[] Pieces { get; set; } = [];
    public ITaskItem[]? SharedInputs { get; set; }

    protected override void ExecuteCore()
    {
        ResolvedModel model = ResolvedModel.Load(ResolvedFile);
        DeleteStaleTemporariesBeside(Pieces.SelectMany(p => new[] { p.Path("Mlir"), p.Path("PieceNpz") }));
        var shared = SharedInputs.Paths().ToArray();
        var stale = Pieces.Where(p => !Freshness.IsUpToDate(
            [p.Path("Mlir"), p.Path("PieceNpz")],
            [p.Path("Spec"), .. p.OptionalPath("OwnerNpz") is { } npz ? new[] { npz } : [], .. shared])).ToList();
        foreach (var p in Pieces.Except(stale)) LogProgress($"{p.ItemSpec}: up to date");
        RunPieces(stale, p => p.ItemSpec, (p, log) =>
            ExportStage.Run(model, model.Piece(p.ItemSpec), p.OptionalPath("OwnerNpz"), p.Path("Mlir"), p.Path("PieceNpz")));
    }
}
