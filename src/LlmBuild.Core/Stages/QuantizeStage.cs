using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Graph;
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

    /// <summary>
    /// Writes the owner's weight file: its weights, then the constants of every piece whose module names the file
    /// (RoPE tables, masks, LoRA zeros; <see cref="ExportStage.OwnerConstants"/>), as TPU-MLIR's own converter lays
    /// out block_i's file for block_i and block_cache_i.
    /// </summary>
    public static void Run(ICheckpoint source, ResolvedModel model, string owner, string npzPath)
    {
        var constants = ExportStage.OwnerConstants(model, owner);
        WeightOwnerWriter.Write(source, model, model.Owner(owner), npzPath, npz => GraphNpz.AddConstants(npz, constants));
    }
}
