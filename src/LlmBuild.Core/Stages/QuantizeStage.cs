using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Models;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Quantization;

namespace LlmBuild.Core.Stages;

/// <summary>
/// Stage 2. Converts or quantizes one weight owner's tensors (embedding, block_i, lm_head) from the source checkpoint
/// into its npz. The checkpoint is opened once per batch of owners and memory-mapped, so owners run in parallel.
/// </summary>
public static class QuantizeStage
{
    public static ICheckpoint OpenSource(ResolvedModel model) => FamilyCheckpoint.OpenForBuild(model.Options.ModelPath, model.Config);

    public static void Run(ICheckpoint source, ResolvedModel model, string owner, string npzPath) =>
        WeightOwnerWriter.Write(source, model, model.Owner(owner), npzPath);
}
