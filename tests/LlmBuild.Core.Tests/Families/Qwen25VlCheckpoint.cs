using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Models;
using LlmBuild.Core.Tests.Checkpoints;
using LlmBuild.Core.Tests.Graph;

namespace LlmBuild.Core.Tests.Families;

/// <summary>
/// qwen2_5_vl has no Hugging Face fixture: a checkpoint is made here (once per test run) from the qwen2_vl fixture's LLM
/// (the same names and math) and a random bf16 vision tower in Qwen2.5-VL's form — RMSNorm, gated SiLU MLP with biases,
/// window attention (window_size 56 px = 2×2 merged tokens, so the fixture image's 3×4 merged grid has whole and cut
/// windows) with full attention in blocks 1 and 3, merger to the LLM's hidden size.
/// </summary>
internal static class Qwen25VlCheckpoint
{
    private static readonly Lazy<string> Folder = new(Write);

    public static string Dir => Folder.Value;

    private static string Write()
    {
        string source = VisionLanguageTests.VlGolden.Load().Dir;
        string dir = Path.Combine(Path.GetTempPath(), "llmbuild-vl-checkpoints", "qwen2_5_vl");
        Directory.CreateDirectory(dir);
        string config = File.ReadAllText(Path.Combine(source, "config.json"))
            .Replace("\"model_type\": \"qwen2_vl\"", "\"model_type\": \"qwen2_5_vl\"")
            .Replace("Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration");
        int start = config.IndexOf("\"vision_config\"", StringComparison.Ordinal), end = config.IndexOf('}', start);
        config = config[..start] + """
            "vision_config": {"depth": 4, "hidden_size": 64, "intermediate_size": 96, "num_heads": 4, "hidden_act": "silu",
              "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "in_chans": 3, "window_size": 56,
              "fullatt_block_indexes": [1, 3], "out_hidden_size": 128, "tokens_per_second": 2, "model_type": "qwen2_5_vl"}
            """ + config[(end + 1)..];
        File.WriteAllText(Path.Combine(dir, "config.json"), config);
        foreach (string file in new[] { "generation_config.json", "preprocessor_config.json", "image-open.png" })
            File.Copy(Path.Combine(source, file), Path.Combine(dir, file), overwrite: true);

        var tensors = new List<TestFiles.Tensor>();
        using (ICheckpoint llm = CheckpointLoader.Open(source))
            foreach (string name in llm.TensorNames.Where(n => !n.StartsWith("visual.", StringComparison.Ordinal)))
            {
                TensorInfo info = llm.GetInfo(name);
                var raw = new byte[info.ByteLength];
                llm.ReadRaw(name, 0, raw);
                tensors.Add(new TestFiles.Tensor(name, "BF16", info.Shape, raw));
            }
        var rng = new Random(2501);
        void Add(string name, long[] shape, float center, float spread)
        {
            var bits = new ushort[shape.Aggregate(1L, (a, b) => a * b)];
            for (int i = 0; i < bits.Length; i++)
                bits[i] = (ushort)(BitConverter.SingleToUInt32Bits(TestWeightSource.ToBf16(center + spread * (float)(rng.NextDouble() * 2 - 1))) >> 16);
            tensors.Add(new TestFiles.Tensor(name, "BF16", shape, TestFiles.Bytes(bits)));
        }
        const int e = 64, inter = 96, outH = 128, merged = 256;
        Add("visual.patch_embed.proj.weight", [e, 3, 2, 14, 14], 0, 0.05f);
        for (int b = 0; b < 4; b++)
        {
            string p = $"visual.blocks.{b}.";
            Add(p + "norm1.weight", [e], 1, 0.2f);
            Add(p + "norm2.weight", [e], 1, 0.2f);
            Add(p + "attn.qkv.weight", [3 * e, e], 0, 0.25f);
            Add(p + "attn.qkv.bias", [3 * e], 0, 0.1f);
            Add(p + "attn.proj.weight", [e, e], 0, 0.15f);
            Add(p + "attn.proj.bias", [e], 0, 0.05f);
            Add(p + "mlp.gate_proj.weight", [inter, e], 0, 0.2f);
            Add(p + "mlp.gate_proj.bias", [inter], 0, 0.05f);
            Add(p + "mlp.up_proj.weight", [inter, e], 0, 0.2f);
            Add(p + "mlp.up_proj.bias", [inter], 0, 0.05f);
            Add(p + "mlp.down_proj.weight", [e, inter], 0, 0.15f);
            Add(p + "mlp.down_proj.bias", [e], 0, 0.05f);
        }
        Add("visual.merger.ln_q.weight", [e], 1, 0.2f);
        Add("visual.merger.mlp.0.weight", [merged, merged], 0, 0.1f);
        Add("visual.merger.mlp.0.bias", [merged], 0, 0.05f);
        Add("visual.merger.mlp.2.weight", [outH, merged], 0, 0.1f);
        Add("visual.merger.mlp.2.bias", [outH], 0, 0.05f);
        TestFiles.WriteSafetensors(Path.Combine(dir, "model.safetensors"), tensors);
        _ = ModelConfig.Load(dir);
        return dir;
    }
}
