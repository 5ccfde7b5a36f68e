using static LlmBuild.Core.Models.LlamaLayout;

namespace LlmBuild.Core.Models.Families;

/// <summary>
/// Llama (Llama 2/3, Llama-3.2): RMSNorm, SwiGLU, rotate-half RoPE with linear or llama3 rope_scaling; with
/// <c>attention_bias</c> q/k/v/o biases and with <c>mlp_bias</c> gate/up/down biases.
/// </summary>
public static class Llama
{
    public static ModelFamily Family { get; } = new()
    {
        Name = "llama",
        ModelTypes = ["llama"],
        WeightNames = With(Names, QkvBiases, new Dictionary<WeightRole, string>
        {
            [WeightRole.OBias] = "model.layers.{0}.self_attn.o_proj.bias",
            [WeightRole.MlpGateBias] = "model.layers.{0}.mlp.gate_proj.bias",
            [WeightRole.MlpUpBias] = "model.layers.{0}.mlp.up_proj.bias",
            [WeightRole.MlpDownBias] = "model.layers.{0}.mlp.down_proj.bias",
        }),
        OptionalRoles = new HashSet<WeightRole>
        {
            WeightRole.QBias, WeightRole.KBias, WeightRole.VBias, WeightRole.OBias,
            WeightRole.MlpGateBias, WeightRole.MlpUpBias, WeightRole.MlpDownBias,
        },
        IgnorableTensors = InverseFrequencyBuffers,
    };
}
