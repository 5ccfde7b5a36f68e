namespace LlmBuild.Core.Models;

/// <summary>
/// The parts of the bmodel net contract (DESIGN §7) that the graph and codegen write and the runtime reads, declared
/// once: the static mask's fill value and the file names the runtime looks for beside the bmodel.
/// </summary>
public static class NetContract
{
    /// <summary>The value static attention masks use for masked positions (−10000-ish, representable in bf16 and f16).</summary>
    public const float MaskFill = -10000f;

    /// <summary>EmbeddingDisk: the raw [vocab, hidden] embedding table in the activation dtype, in config/.</summary>
    public const string EmbeddingFileName = "embedding.bin";
}
