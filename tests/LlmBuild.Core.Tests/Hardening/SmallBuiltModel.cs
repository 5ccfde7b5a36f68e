using LlmBuild.Core.Tests.Checkpoints;
using LlmBuild.Core.Tests.Codegen;
using LlmBuild.Core.Tests.Graph;

namespace LlmBuild.Core.Tests.Hardening;

/// <summary>
/// A qwen2 model small enough to load thousands of times (vocab 96, hidden 32, 2 layers, SeqLength 16), saved as a
/// safetensors checkpoint and built through the real stages by <see cref="ExampleBuild"/>.
/// </summary>
internal static class SmallBuiltModel
{
    private const string Config = """
    {"model_type": "qwen2", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
     "intermediate_size": 64, "vocab_size": 96, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "max_position_embeddings": 512,
     "tie_word_embeddings": true, "torch_dtype": "bfloat16", "hidden_act": "silu"}
    """;

    private static readonly Lazy<ExampleBuild.Built> Lazy = new(() =>
    {
        var (dir, checkpoint) = SyntheticModels.Create("hardening-small-qwen2", Config);
        using (checkpoint)
        {
            string weights = Path.Combine(dir, "model.safetensors");
            if (!File.Exists(weights))
            {
                var tensors = checkpoint.TensorNames.Select(name =>
                {
                    var info = checkpoint.GetInfo(name);
                    var data = new float[info.ElementCount];
                    checkpoint.ReadFloat32(name, 0, data);
                    return new TestFiles.Tensor(name, "F32", info.Shape, TestFiles.Bytes(data));
                }).ToArray();
                string temp = weights + ".tmp";
                TestFiles.WriteSafetensors(temp, tensors);
                File.Move(temp, weights, overwrite: true);
            }
        }
        return ExampleBuild.Get("bf16", seqLength: 16, extra: ("ModelPath", dir));
    });

    public static ExampleBuild.Built Get() => Lazy.Value;
}
