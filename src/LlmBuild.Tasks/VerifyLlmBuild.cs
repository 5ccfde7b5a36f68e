using Microsoft.Build.Framework;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Stages;

namespace LlmBuild.Tasks;

/// <summary>Stage 6: runs the built model in the emulator against the f32 reference; writes verify.json; fails below thresholds.</summary>
public sealed class VerifyLlmBuild : LlmTask
{
    [Required] public string ResolvedFile { get; set; } = "";
    [Required] public string BModel { get; set; } = "";
    [Required] public string Report { get; set; } = "";

    protected override void ExecuteCore()
    {
        ResolvedModel model = ResolvedModel.Load(ResolvedFile);
        // A failed verify moves the model next to the report: bin/ keeps only verified models.
        string quarantine = System.IO.Path.Combine(System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(Report))!,
            System.IO.Path.GetFileNameWithoutExtension(BModel) + ".unverified.bmodel");
        VerifyStage.RunOrQuarantine(model, BModel, Report, quarantine, LogProgress);
    }
}
