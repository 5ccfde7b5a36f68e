using static LlmBuild.Core.Models.LlamaLayout;

namespace LlmBuild.Core.Models.Families;

/// <summary>
/// Qwen2-VL: a qwen2 LLM (q/k/v biases) with M-RoPE (temporal/height/width positions split over the frequencies by
/// mrope_section), and a vision tower — the Conv3d patch embedding as a linear over C·T·P·P inputs, blocks of LayerNorm,
/// fused-qkv attention with 2-D rotary positions and a quick_gelu MLP, then the merger (LayerNorm, 2×2 patches
/// concatenated, Linear → GELU → Linear to the LLM's hidden size).
/// </summary>
public static class Qwen2Vl
{
    /// <summary>Hugging Face's names of the Qwen2-VL / Qwen2.5-VL vision tensors both towers share.</summary>
    internal static readonly IReadOnlyDictionary<VisionRole, string> SharedVisionNames = new Dictionary<VisionRole, string>
    {
        [VisionRole.PatchEmbed] = "visual.patch_embed.proj.weight",
        [VisionRole.Norm1] = "visual.blocks.{0}.norm1.weight",
        [VisionRole.Qkv] = "visual.blocks.{0}.attn.qkv.weight",
        [VisionRole.QkvBias] = "visual.blocks.{0}.attn.qkv.bias",
        [VisionRole.Proj] = "visual.blocks.{0}.attn.proj.weight",
        [VisionRole.ProjBias] = "visual.blocks.{0}.attn.proj.bias",
        [VisionRole.Norm2] = "visual.blocks.{0}.norm2.weight",
        [VisionRole.MergerNorm] = "visual.merger.ln_q.weight",
        [VisionRole.Merger0] = "visual.merger.mlp.0.weight",
        [VisionRole.Merger0Bias] = "visual.merger.mlp.0.bias",
        [VisionRole.Merger2] = "visual.merger.mlp.2.weight",
        [VisionRole.Merger2Bias] = "visual.merger.mlp.2.bias",
    };

    public static ModelFamily Family { get; } = new()
    {
        Name = "qwen2_vl",
        ModelTypes = ["qwen2_vl"],
        WeightNames = With(Names, QkvBiases),
        SlidingWindow = SlidingWindowLayers.FromMaxWindowLayers,
        IgnorableTensors = InverseFrequencyBuffers,
        MultimodalRope = true,
        Vision = new VisionTowerDeclaration
        {
            WeightNames = SharedVisionNames.Concat(new Dictionary<VisionRole, string>
            {
                [VisionRole.Norm1Bias] = "visual.blocks.{0}.norm1.bias",
                [VisionRole.Norm2Bias] = "visual.blocks.{0}.norm2.bias",
                [VisionRole.Fc1] = "visual.blocks.{0}.mlp.fc1.weight",
                [VisionRole.Fc1Bias] = "visual.blocks.{0}.mlp.fc1.bias",
                [VisionRole.Fc2] = "visual.blocks.{0}.mlp.fc2.weight",
                [VisionRole.Fc2Bias] = "visual.blocks.{0}.mlp.fc2.bias",
                [VisionRole.MergerNormBias] = "visual.merger.ln_q.bias",
            }).ToDictionary(p => p.Key, p => p.Value),
            Norm = VisionNorm.LayerNorm,
            DefaultMaxPixels = (756, 756),
        },
    };
}
