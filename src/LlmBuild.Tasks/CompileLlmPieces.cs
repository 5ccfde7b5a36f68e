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
        // Pieces that name one weight file (block_i and block_cache_i, embedding, embedding_cache and a tied lm_head) share
        // its coefficients' sha256, computed once: the first piece of every file goes first, so the cores hash different
        // files instead of one waiting for the other's hash; the biggest file (the embedding's) leads.
        stale = stale.GroupBy(p => p.Path("WeightFile"), StringComparer.Ordinal)
            .OrderByDescending(g => LengthOf(g.Key))
            .SelectMany((g, file) => g.Select((p, nth) => (p, nth, file)))
            .OrderBy(x => x.nth).ThenBy(x => x.file).Select(x => x.p).ToList();
        // The pieces' small outputs are fsynced concurrently, each before its rename (ConcurrentCommits).
        ConcurrentCommits.Run(() =>
            RunPieces(stale, p => p.ItemSpec, (p, log) =>
                CompileStage.RunReferencing(model, model.Piece(p.ItemSpec), p.Path("Mlir"), p.Path("WeightFile"), p.Path("BModel"))));
    }

    private static long LengthOf(string path) => File.Exists(path) ? new FileInfo(path).Length : 0;
}
