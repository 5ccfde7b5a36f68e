using Microsoft.Build.Framework;
using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.IO;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Stages;

namespace LlmBuild.Tasks;

/// <summary>Stage 2: writes one npz per weight owner (embedding, block_i, lm_head), only for owners that are out of date.</summary>
public sealed class QuantizeLlmWeights : LlmTask
{
    [Required] public string ResolvedFile { get; set; } = "";
    /// <summary>Identity = owner name; metadata Spec (its spec file) and Npz (its output).</summary>
    [Required] public ITaskItem[] Owners { get; set; } = [];
    /// <summary>Inputs every owner depends on (weight files, SDK files, the task assembly).</summary>
    public ITaskItem[]? SharedInputs { get; set; }

    protected override void ExecuteCore()
    {
        ResolvedModel model = ResolvedModel.Load(ResolvedFile);
        DeleteStaleTemporariesBeside(Owners.Select(o => o.Path("Npz")));
        var shared = SharedInputs.Paths().ToArray();
        var stale = Owners.Where(o => !Freshness.IsUpToDate([o.Path("Npz")], [o.Path("Spec"), .. shared])).ToList();
        foreach (var o in Owners.Except(stale)) LogPieceUpToDate(o.ItemSpec);
        if (stale.Count == 0) return;
        using ICheckpoint checkpoint = QuantizeStage.OpenSource(model);
        RunPieces(stale, o => o.ItemSpec, (o, log) =>
        {
            if (QuantizeStage.Run(checkpoint, model, o.ItemSpec, o.Path("Npz"), WeightsIdentity(o.Path("Spec"))))
                log("weights unchanged: copied, constants rewritten");
        });
    }

    /// <summary>The owner spec's digest of what its stored weights depend on.</summary>
    private static string? WeightsIdentity(string spec)
    {
        using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(spec));
        return doc.RootElement.TryGetProperty("WeightsIdentity", out var v) ? v.GetString() : null;
    }
}
