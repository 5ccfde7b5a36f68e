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

    /// <summary>
    /// The <c>vit</c> net of vision-language models (DESIGN §13), as TPU-MLIR's Qwen2-VL converter names it: patches
    /// [N, C·T·P·P] f32, 2-D rotary position ids [N, 2] i32, full attention mask [1, 1, N, N] f32, and with window
    /// attention the window mask [1, 1, N, N] and the reverse index [N / merge²] i32; output [N / merge², hidden].
    /// </summary>
    public static class Vit
    {
        public const string Net = "vit";
        public const string Patches = "input_states";
        public const string PositionIds = "position_ids";
        public const string FullMask = "full_attn_mask";
        public const string WindowMask = "window_attn_mask";
        public const string ReverseIndex = "reverse_index";
        public const string Output = "image_embeds";
    }
}
