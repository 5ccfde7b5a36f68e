using Microsoft.Build.Framework;
using LlmBuild.Core.IO;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Stages;

namespace LlmBuild.Tasks;

/// <summary>Stage 4: per-chip codegen of each out-of-date piece into its own bmodel, which references its coefficients in the weight file.</summary>
public sealed class CompileLlmPieces : LlmTask
{
    [Required] public string ResolvedFile { get; set; } = "";
    /// <summary>Identity = piece name; metadata Mlir, WeightFile (the one its module names), BModel.</summary>
    [Required] public ITaskItem[] Pieces { get; set; } = [];
    public ITaskItem[]? SharedInputs { get; set; }

    protected override void ExecuteCore()
    {
        ResolvedModel model = ResolvedModel.Load(ResolvedFile);
        DeleteStaleTemporariesBeside(Pieces.Select(p => p.Path("BModel")));
        var shared = SharedInputs.Paths().ToArray();
        var stale = Pieces.Where(p => !Freshness.IsUpToDate([p.Path("BModel")], [p.Path("Mlir"), p.Path("WeightFile"), .. shared])).ToList();
        foreach (var p in Pieces.Except(stale)) LogPieceUpToDate(p.ItemSpec);
        // The pieces' small outputs are fsynced concurrently, each before its rename (ConcurrentCommits).
        ConcurrentCommits.Run(() =>
            RunPieces(stale, p => p.ItemSpec, (p, log) =>
                CompileStage.RunReferencing(model, model.Piece(p.ItemSpec), p.Path("Mlir"), p.Path("WeightFile"), p.Path("BModel"))));
    }
}
