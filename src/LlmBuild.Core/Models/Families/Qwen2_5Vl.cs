using static LlmBuild.Core.Models.LlamaLayout;

namespace LlmBuild.Core.Models.Families;

/// <summary>
/// Qwen2.5-VL: Qwen2-VL's LLM and M-RoPE; its vision tower uses RMSNorm, a gated (SwiGLU) MLP with biases, and window
/// attention — patches reordered window by window (windows of window_size pixels), every block but
/// fullatt_block_indexes attending only within its window, the merged tokens put back in raster order at the end.
/// </summary>
public static class Qwen2_5Vl
{
    public static ModelFamily Family { get; } = new()
    {
        Name = "qwen2_5_vl",
        ModelTypes = ["qwen2_5_vl"],
        WeightNames = With(Names, QkvBiases),
        SlidingWindow = SlidingWindowLayers.FromMaxWindowLayers,
        IgnorableTensors = InverseFrequencyBuffers,
        MultimodalRope = true,
        Vision = new VisionTowerDeclaration
        {
            WeightNames = Qwen2Vl.SharedVisionNames.Concat(new Dictionary<VisionRole, string>
            {
                [VisionRole.Gate] = "visual.blocks.{0}.mlp.gate_proj.weight",
                [VisionRole.GateBias] = "visual.blocks.{0}.mlp.gate_proj.bias",
                [VisionRole.Up] = "visual.blocks.{0}.mlp.up_proj.weight",
                [VisionRole.UpBias] = "visual.blocks.{0}.mlp.up_proj.bias",
                [VisionRole.Down] = "visual.blocks.{0}.mlp.down_proj.weight",
                [VisionRole.DownBias] = "visual.blocks.{0}.mlp.down_proj.bias",
            }).ToDictionary(p => p.Key, p => p.Value),
            Norm = VisionNorm.RmsNorm,
            GatedMlp = true,
            EmbedDimField = "hidden_size",
            OutHiddenField = "out_hidden_size",
            IntermediateField = "intermediate_size",
            WindowSizeField = "window_size",
            FullAttentionBlocksField = "fullatt_block_indexes",
            DefaultMaxPixels = (672, 896),
        },
    };
}
