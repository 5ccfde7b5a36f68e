using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.Checkpoints;

/// <summary>pytorch_model*.bin reader (zip + restricted pickle).</summary>
public static class TorchCheckpointReader
{
    public static ICheckpoint OpenIndex(string indexPath) =>
        throw new LlmBuildException(ErrorCodes.BadTorchCheckpoint, $"'{indexPath}': pytorch .bin checkpoints are not readable yet; convert to safetensors.", indexPath);

    public static ICheckpoint OpenFiles(string directory, IReadOnlyList<string> paths) =>
        throw new LlmBuildException(ErrorCodes.BadTorchCheckpoint, $"'{paths[0]}': pytorch .bin checkpoints are not readable yet; convert to safetensors.", paths[0]);
}
