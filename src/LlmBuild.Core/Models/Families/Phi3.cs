using static LlmBuild.Core.Models.LlamaLayout;

namespace LlmBuild.Core.Models.Families;

/// <summary>
/// Phi-3 / Phi-4-mini: llama's block with fused <c>qkv_proj</c> (rows q | k | v) and <c>gate_up_proj</c> (rows gate | up),
/// longrope rope_scaling, <c>partial_rotary_factor</c> (Phi-4-mini) and a sliding window on every layer when configured.
/// </summary>
public static class Phi3
{
    public static ModelFamily Family { get; } = new()
    {
        Name = "phi3",
        ModelTypes = ["phi3"],
        WeightNames = With(Names.Where(n => n.Key is not (WeightRole.QProj or WeightRole.KProj or WeightRole.VProj
            or WeightRole.MlpGate or WeightRole.MlpUp))),
        FusedWeights =
        [
            new("model.layers.{0}.self_attn.qkv_proj.weight", [WeightRole.QProj, WeightRole.KProj, WeightRole.VProj]),
            new("model.layers.{0}.mlp.gate_up_proj.weight", [WeightRole.MlpGate, WeightRole.MlpUp]),
        ],
        SlidingWindow = SlidingWindowLayers.All,
        IgnorableTensors = InverseFrequencyBuffers,
    };
}
