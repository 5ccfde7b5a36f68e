using Microsoft.Build.Framework;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Stages;

namespace LlmBuild.Tasks;

/// <summary>Stage 5: merges the piece bmodels into bin/&lt;name&gt;.bmodel and copies the model's config files to bin/config/.</summary>
public sealed class CombineLlmBModel : LlmTask
{
    [Required] public string ResolvedFile { get; set; } = "";
    /// <summary>Identity = piece name; metadata BModel.</summary>
    [Required] public ITaskItem[] Pieces { get; set; } = [];
    public ITaskItem[]? ConfigFiles { get; set; }
    [Required] public string OutputBModel { get; set; } = "";
    [Required] public string OutputConfigDirectory { get; set; } = "";

    protected override void ExecuteCore()
    {
        ResolvedModel model = ResolvedModel.Load(ResolvedFile);
        DeleteStaleTemporariesBeside([OutputBModel, System.IO.Path.Combine(OutputConfigDirectory, "config.json")]);
        var result = CombineStage.Run(model, Pieces.Select(p => p.Path("BModel")).ToArray(), ConfigFiles.Paths().ToArray(), OutputBModel, OutputConfigDirectory);
        LogProgress($"wrote {OutputBModel}: {result.OutputBytes / (1024.0 * 1024.0):0.0} MiB, {result.Nets} nets, " +
            $"{result.UniqueBinaries} unique binaries, {result.DedupedBinaries} shared ones stored once ({result.DedupedBytes / (1024.0 * 1024.0):0.0} MiB saved)");
    }
}
