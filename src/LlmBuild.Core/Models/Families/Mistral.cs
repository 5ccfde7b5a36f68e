using static LlmBuild.Core.Models.LlamaLayout;

namespace LlmBuild.Core.Models.Families;

/// <summary>Mistral: llama's block and names, with every layer attending through <c>sliding_window</c> keys.</summary>
public static class Mistral
{
    public static ModelFamily Family { get; } = new()
    {
        Name = "mistral",
        ModelTypes = ["mistral"],
        WeightNames = Names,
        SlidingWindow = SlidingWindowLayers.All,
        IgnorableTensors = InverseFrequencyBuffers,
    };
}
