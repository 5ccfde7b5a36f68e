using static LlmBuild.Core.Models.LlamaLayout;

namespace LlmBuild.Core.Models.Families;

/// <summary>Qwen2 / Qwen2.5: llama's block with q/k/v biases; a sliding window from <c>max_window_layers</c> when enabled.</summary>
public static class Qwen2
{
    public static ModelFamily Family { get; } = new()
    {
        Name = "qwen2",
        ModelTypes = ["qwen2"],
        WeightNames = With(Names, QkvBiases),
        SlidingWindow = SlidingWindowLayers.FromMaxWindowLayers,
        IgnorableTensors = InverseFrequencyBuffers,
    };
}
