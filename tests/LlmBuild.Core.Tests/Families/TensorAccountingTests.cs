using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Models;
using LlmBuild.Core.Reference;
using LlmBuild.Core.Runtime;
using LlmBuild.Core.Stages;
using LlmBuild.Core.Tests.Checkpoints;
using LlmBuild.Core.Tests.Codegen;

namespace LlmBuild.Core.Tests.Families;

/// <summary>
/// No tensor left behind: every checkpoint tensor is consumed by a role, declared ignorable by the family, or dropped on
/// purpose with LlmIgnoreTensors — anything else stops resolve with LLMB0010 naming it.
/// </summary>
[TestClass]
public sealed class TensorAccountingTests
{
    /// <summary>A copy of the llama fixture whose safetensors holds the fixture's tensors plus <paramref name="extra"/>.</summary>
    private static string LlamaWith(IEnumerable<TestFiles.Tensor> extra, Func<string, string>? patchConfig = null)
    {
        string source = Path.Combine(ExampleBuild.RepoRoot, "tests", "fixtures", "families", "llama");
        string dir = TestFiles.TempDir();
        foreach (string f in Directory.GetFiles(source).Where(f => !f.EndsWith(".safetensors", StringComparison.Ordinal) && !Path.GetFileName(f).StartsWith("golden", StringComparison.Ordinal)))
            File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        if (patchConfig is not null) File.WriteAllText(Path.Combine(dir, "config.json"), patchConfig(File.ReadAllText(Path.Combine(dir, "config.json"))));
        var tensors = new List<TestFiles.Tensor>();
        using (ICheckpoint c = CheckpointLoader.Open(source))
            foreach (string name in c.TensorNames)
            {
                TensorInfo info = c.GetInfo(name);
                var bytes = new byte[info.ByteLength];
                c.ReadRaw(name, bytes);
                tensors.Add(new TestFiles.Tensor(name, "BF16", info.Shape, bytes));
            }
        TestFiles.WriteSafetensors(Path.Combine(dir, "model.safetensors"), tensors.Concat(extra));
        return dir;
    }

    private static TestFiles.Tensor Bf16(string name, long[] shape, int seed, float scale)
    {
        float[] values = TestFiles.RandomFloats((int)shape.Aggregate(1L, (a, b) => a * b), seed, scale);
        var bits = values.Select(v => (ushort)(BitConverter.SingleToUInt32Bits(v) >> 16)).ToArray();
        return new TestFiles.Tensor(name, "BF16", shape, TestFiles.Bytes(bits));
    }

    private static Dictionary<string, string?> Props(string dir, string? ignore = null) => new()
    {
        ["ModelPath"] = dir, ["SeqLength"] = "32", ["Quantize"] = "bf16", ["LlmIgnoreTensors"] = ignore,
    };

    [TestMethod]
    public void AnUnknownTensorStopsResolveNamingIt()
    {
        string dir = LlamaWith([Bf16("model.layers.0.self_attn.q_proj.lora_A.weight", [8, 64], 1, 0.1f)]);
        var e = Assert.ThrowsExactly<LlmBuildException>(() => ResolveStage.Resolve(Props(dir), new List<LlmBuildWarning>()));
        Assert.AreEqual(ErrorCodes.UnusedTensor, e.Code);
        StringAssert.Contains(e.Message, "model.layers.0.self_attn.q_proj.lora_A.weight");
        StringAssert.Contains(e.Message, "family llama");
        StringAssert.Contains(e.Message, "LlmIgnoreTensors");
    }

    [TestMethod]
    public void IgnoredTensorsAreDroppedWithAWarning()
    {
        string dir = LlamaWith([Bf16("model.layers.0.self_attn.q_proj.lora_A.weight", [8, 64], 1, 0.1f), Bf16("model.rotary_emb.inv_freq", [8], 2, 1f)]);
        var warnings = new List<LlmBuildWarning>();
        ResolveStage.Resolve(Props(dir, "*.lora_A.weight"), warnings);
        var w = warnings.Single(x => x.Code == ErrorCodes.UnusedTensor);
        StringAssert.Contains(w.Message, "lora_A");
        Assert.IsFalse(w.Message.Contains("inv_freq", StringComparison.Ordinal), "a buffer the family declares ignorable is no news");
    }

    /// <summary>
    /// Llama-2-style attention_bias + mlp_bias. No Hugging Face golden exists for this checkpoint (it is made here), so the
    /// built model is checked against the f32 reference forward, and the reference against the same model without the
    /// biases (they must change the logits, or the test would prove nothing).
    /// </summary>
    [TestMethod]
    public void LlamaWithAttentionAndMlpBiasesBuildsExactly()
    {
        var biases = new List<TestFiles.Tensor>();
        for (int layer = 0; layer < 3; layer++)
        {
            string p = $"model.layers.{layer}.";
            biases.Add(Bf16(p + "self_attn.q_proj.bias", [64], 10 + layer, 0.5f));
            biases.Add(Bf16(p + "self_attn.k_proj.bias", [32], 20 + layer, 0.5f));
            biases.Add(Bf16(p + "self_attn.v_proj.bias", [32], 30 + layer, 0.5f));
            biases.Add(Bf16(p + "self_attn.o_proj.bias", [64], 40 + layer, 0.5f));
            biases.Add(Bf16(p + "mlp.gate_proj.bias", [160], 50 + layer, 0.5f));
            biases.Add(Bf16(p + "mlp.up_proj.bias", [160], 60 + layer, 0.5f));
            biases.Add(Bf16(p + "mlp.down_proj.bias", [64], 70 + layer, 0.5f));
        }
        string dir = LlamaWith(biases, json => json.Replace("\"attention_bias\": false", "\"attention_bias\": true").Replace("\"mlp_bias\": false", "\"mlp_bias\": true"));
        int[] ids = [12, 450, 7, 33, 101, 64, 5, 280];
        float[] expected;
        using (ICheckpoint c = CheckpointLoader.Open(dir)) expected = new ReferenceModel(c, ModelConfig.Load(dir)).Forward(ids);
        float[] withoutBiases;
        string plain = Path.Combine(ExampleBuild.RepoRoot, "tests", "fixtures", "families", "llama");
        using (ICheckpoint c = CheckpointLoader.Open(plain)) withoutBiases = new ReferenceModel(c, ModelConfig.Load(plain)).Forward(ids);
        Assert.IsTrue(VerifyStage.Cosine(expected, withoutBiases) < 0.999, "the biases change the logits");

        var built = ExampleBuild.Get("bf16", seqLength: 32, extra: [("ModelPath", dir), ("LlmModelName", "llama-bias")]);
        // Split across two devices: a row-parallel linear's bias (o_proj, down_proj) is added once, after the reduce.
        var split = ExampleBuild.Get("bf16", seqLength: 32, extra: [("ModelPath", dir), ("LlmModelName", "llama-bias"), ("NumDevice", "2")]);
        using (var emu2 = LlmEmulator.Load(split.BModel))
        {
            double splitCosine = VerifyStage.Cosine(emu2.Prefill(ids, allPositions: true), expected);
            Console.WriteLine($"llama with biases on two devices vs f32 reference: cosine {splitCosine:F6}");
            Assert.IsTrue(splitCosine >= 0.9999, $"two-device cosine {splitCosine}");
        }
        Assert.AreEqual(7 * 3, built.Model.Owners.SelectMany(o => o.Entries).Count(e => e.Role.ToString().EndsWith("Bias", StringComparison.Ordinal)));
        using var emu = LlmEmulator.Load(built.BModel);
        float[] actual = emu.Prefill(ids, allPositions: true);
        double cosine = VerifyStage.Cosine(actual, expected);
        Console.WriteLine($"llama with attention and MLP biases: bf16 build vs f32 reference cosine {cosine:F6}");
        Assert.IsTrue(cosine >= 0.9999, $"cosine {cosine}");
    }

    /// <summary>Issue 19, cause 12: untied without lm_head.weight is refused at resolve, not left for verify to notice.</summary>
    [TestMethod]
    public void UntiedWithoutLmHeadIsRefusedAtResolve()
    {
        string dir = LlamaWith([], json => json.Replace("\"tie_word_embeddings\": true", "\"tie_word_embeddings\": false"));
        var e = Assert.ThrowsExactly<LlmBuildException>(() => ResolveStage.Resolve(Props(dir), new List<LlmBuildWarning>()));
        Assert.AreEqual(ErrorCodes.MissingWeight, e.Code);
        StringAssert.Contains(e.Message, "lm_head.weight");
    }

    /// <summary>Issue 19, cause 4: a key given twice in config.json is a coded error naming it.</summary>
    [TestMethod]
    public void ADuplicateConfigKeyIsRefused()
    {
        string dir = LlamaWith([], json => json.Replace("\"hidden_size\": 64,", "\"hidden_size\": 64, \"hidden_size\": 128,"));
        var e = Assert.ThrowsExactly<LlmBuildException>(() => ModelConfig.Load(dir));
        Assert.AreEqual(ErrorCodes.BadModelConfig, e.Code);
        StringAssert.Contains(e.Message, "hidden_size");
    }

    /// <summary>The reference forward does not share the role map blindly: it refuses a tensor it would not read, so
    /// verify cannot vouch for a build that dropped weights; a tensor dropped on purpose is passed to it.</summary>
    [TestMethod]
    public void TheReferenceRefusesTensorsItDoesNotRead()
    {
        string dir = LlamaWith([Bf16("model.layers.0.self_attn.q_proj.lora_A.weight", [8, 64], 1, 0.1f)]);
        using ICheckpoint c = CheckpointLoader.Open(dir);
        var e = Assert.ThrowsExactly<LlmBuildException>(() => new ReferenceModel(c, ModelConfig.Load(dir)));
        Assert.AreEqual(ErrorCodes.UnusedTensor, e.Code);
        StringAssert.Contains(e.Message, "lora_A");
        Assert.AreEqual(1000 * 8, new ReferenceModel(c, ModelConfig.Load(dir), droppedTensors: ["*.lora_A.weight"]).Forward([1, 2, 3, 4, 5, 6, 7, 8]).Length);

        // Through the stages: the ignored tensor reaches verify, which passes.
        var built = ExampleBuild.Get("bf16", seqLength: 32, extra: [("ModelPath", dir), ("LlmModelName", "llama-lora"), ("LlmIgnoreTensors", "*.lora_A.weight")]);
        CollectionAssert.AreEqual(new[] { "*.lora_A.weight" }, built.Model.IgnoredTensors!.ToArray());
        Assert.IsTrue(VerifyStage.Run(built.Model, built.BModel, Path.Combine(built.Dir, "verify.json")).Passed);
    }
}
