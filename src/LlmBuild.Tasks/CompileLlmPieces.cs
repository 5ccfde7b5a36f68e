using Microsoft.Build.Framework;
using LlmBuild.Core.IO;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Stages;

namespace LlmBuild.Tasks;

/// <summary>Stage 4: per-chip codegen of each out-of-date piece into its own bmodel.</summary>
public sealed class CompileLlmPieces : LlmTask
{
    [Required] public string ResolvedFile { get; set; } = "";
    /// <summary>Identity = piece name; metadata Mlir, PieceNpz, BModel.</summary>
    [Required] public ITaskItem[] Pieces { get; set; } = [];
    public ITaskItem[]? SharedInputs { get; set; }

    protected override void ExecuteCore()
    {
        ResolvedModel model = ResolvedModel.Load(ResolvedFile);
        DeleteStaleTemporariesBeside(Pieces.Select(p => p.Path("BModel")));
        var shared = SharedInputs.Paths().ToArray();
        var stale = Pieces.Where(p => !Freshness.IsUpToDate([p.Path("BModel")], [p.Path("Mlir"), p.Path("PieceNpz"), .. shared])).ToList();
        foreach (var p in Pieces.Except(stale)) LogProgress($"{p.ItemSpec}: up to date");
        RunPieces(stale, p => p.ItemSpec, (p, log) =>
            CompileStage.Run(model, model.Piece(p.ItemSpec), p.Path("Mlir"), p.Path("PieceNpz"), p.Path("BModel")));
    }
}
