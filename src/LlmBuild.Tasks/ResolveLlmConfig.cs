using Microsoft.Build.Framework;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.IO;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Stages;

namespace LlmBuild.Tasks;

/// <summary>Stage 1: resolves the project's options against config.json into resolved.json and the stage specs.</summary>
public sealed class ResolveLlmConfig : LlmTask
{
    /// <summary>One item per option: Identity = property name, metadata Value = its value.</summary>
    [Required] public ITaskItem[] Options { get; set; } = [];
    [Required] public string IntermediateDirectory { get; set; } = "";
    /// <summary>Print the resolved configuration and write nothing.</summary>
    public bool DryRun { get; set; }

    protected override void ExecuteCore()
    {
        var values = Options.ToDictionary(o => o.ItemSpec, o => (string?)o.GetMetadata("Value"), StringComparer.Ordinal);
        var warnings = new List<LlmBuildWarning>();
        ResolvedModel model = ResolveStage.Resolve(values, warnings);
        foreach (var w in warnings) LogWarning(w);
        if (DryRun)
        {
            LogProgress(ResolveStage.Describe(model));
            return;
        }
        AtomicFile.DeleteStaleTemporaries(IntermediateDirectory);
        ResolveStage.WriteOutputs(model, IntermediateDirectory, values.GetValueOrDefault(ResolveStage.SdkHashOption));
        LogProgress($"resolved {model.Config.ModelType} ({model.Family}), {model.Quantize}, seq {model.SeqLength}, {model.Pieces.Count} pieces");
    }
}
