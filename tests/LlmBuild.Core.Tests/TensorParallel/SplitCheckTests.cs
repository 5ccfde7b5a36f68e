using TP = LlmBuild.Core.Plan.TensorParallel;
using LlmBuild.Core.Chips;
using LlmBuild.Core.Codegen;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Stages;
using LlmBuild.Core.Tests.Codegen;
using LlmBuild.Core.Tests.Graph;

namespace LlmBuild.Core.Tests.TensorParallel;

/// <summary>What NumDevice a model accepts (coded errors that say how to fix it) and the per-device memory budget.</summary>
[TestClass]
public sealed class SplitCheckTests
{
    private static Dictionary<string, string?> Props(params (string Name, string Value)[] extra)
    {
        var props = new Dictionary<string, string?>
        {
            ["ModelPath"] = ExampleBuild.ModelDir, ["SeqLength"] = "64", ["Quantize"] = "bf16", ["LlmModelName"] = "tiny-qwen2",
        };
        foreach (var (n, v) in extra) props[n] = v;
        return props;
    }

    /// <summary>
    /// Resolve refuses these options for the built-in backend (one early error, before any stage runs); the tpu-mlir
    /// backend, which splits the model itself, resolves them.
    /// </summary>
    private static LlmBuildException Refused(params (string Name, string Value)[] extra)
    {
        ExampleBuild.Resolve(Props([.. extra, ("LlmCodegenBackend", "tpu-mlir")]));
        return Assert.ThrowsExactly<LlmBuildException>(() => ExampleBuild.Resolve(Props([.. extra, ("LlmCodegenBackend", "builtin")])));
    }

    [TestMethod]
    public void DevicesMustDivideTheHeads()
    {
        var e = Refused(("NumDevice", "4"));
        Assert.AreEqual(ErrorCodes.TensorParallelSplit, e.Code);
        StringAssert.Contains(e.Message, "num_key_value_heads=2");
        StringAssert.Contains(e.Message, "config.json");
        StringAssert.Contains(e.Message, "Use a NumDevice that divides 2 (1 or 2)");
        Console.WriteLine(e.Message);
        Assert.AreEqual(ErrorCodes.TensorParallelSplit, Refused(("NumDevice", "3")).Code);
    }

    [TestMethod]
    public void QuantizedSlicesMustHoldWholeGroups()
    {
        // A device gets 32 of o_proj's 64 input columns and 96 of down_proj's 192: 64 divides neither, 32 both.
        var e = Refused(("NumDevice", "2"), ("Quantize", "w4bf16"), ("QGroupSize", "64"));
        Assert.AreEqual(ErrorCodes.BadGroupSize, e.Code);
        StringAssert.Contains(e.Message, "QGroupSize=64");
        StringAssert.Contains(e.Message, "Use QGroupSize=32");
        Console.WriteLine(e.Message);
        TP.Check(ExampleBuild.Resolve(Props(("NumDevice", "2"), ("Quantize", "w4bf16"), ("QGroupSize", "32"))));
        TP.Check(ExampleBuild.Resolve(Props(("NumDevice", "2"), ("Quantize", "w4bf16"), ("QGroupSize", "0"))));
    }

    [TestMethod]
    public void FourBitSlicesMustBeWholeBytes()
    {
        const string oddMlp = """
        {"model_type": "qwen3", "hidden_size": 48, "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
         "head_dim": 16, "intermediate_size": 98, "vocab_size": 300, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
         "max_position_embeddings": 4096, "tie_word_embeddings": true, "torch_dtype": "bfloat16", "hidden_act": "silu"}
        """;
        var (dir, _) = SyntheticModels.Create("qwen3-odd-mlp", oddMlp);
        var model = TestResolver.Resolve(dir, TestResolver.Options(dir) with { Quantize = "w4bf16", QGroupSize = 0, NumDevice = 2 });
        var e = Assert.ThrowsExactly<LlmBuildException>(() => TP.Check(model));
        Assert.AreEqual(ErrorCodes.BadGroupSize, e.Code);
        StringAssert.Contains(e.Message, "K=49");
        TP.Check(model with { Quantize = "w8bf16", Weights = model.Weights with { Bits = 8 } });
    }

    [TestMethod]
    public void PipelineNeedsThreeDevicesAndDeviceCountsArePositive()
    {
        // pp is built now (Flags/PipelineParallelTests); two devices leave none for the layers, with either backend.
        var e = Assert.ThrowsExactly<LlmBuildException>(() => ExampleBuild.Resolve(Props(("NumDevice", "2"), ("DistributeStrategy", "pp"))));
        Assert.AreEqual(ErrorCodes.PipelineSplit, e.Code);
        StringAssert.Contains(e.Message, "NumDevice ≥ 3");
        Assert.AreEqual(ErrorCodes.InvalidProperty, Assert.ThrowsExactly<LlmBuildException>(() => ExampleBuild.Resolve(Props(("NumDevice", "0")))).Code);
        var options = TestResolver.Options(TestResolver.TinyModelDir) with { NumDevice = 0 };
        Assert.AreEqual(ErrorCodes.InvalidProperty, Assert.ThrowsExactly<LlmBuildException>(options.Validate).Code);
        TP.Check(ExampleBuild.Resolve(Props(("NumDevice", "1"), ("DistributeStrategy", "pp"))));
    }

    [TestMethod]
    public void MemoryBudgetIsPerDevice()
    {
        // bf16 tiny-qwen2 on BM1684X (4 KiB alignment). Per layer and device: 9 entries under 4 KiB (2 norms, q/k/v and
        // their biases, o_proj [64,32]) and gate/up [96,64], down [64,96] at 12 KiB each.
        const long perLayer = 9 * 4096 + 3 * 12288;
        const long table = 151936L * 64 * 2; // embedding, and lm_head tied to it
        var one = ExampleBuild.Resolve(Props());
        var two = ExampleBuild.Resolve(Props(("NumDevice", "2")));
        var chip = ChipProfile.BM1684X;
        var d0 = DeviceMemoryBudget.Compute(two, chip, 4096, "block_0_s0_d0", 0);
        var d1 = DeviceMemoryBudget.Compute(two, chip, 4096, "block_0_s0_d1", 1);
        Assert.AreEqual(4 * perLayer, d1.WeightBytes);
        Assert.AreEqual(4 * perLayer + 2 * table + 4096, d0.WeightBytes, "device 0 also holds embedding, lm_head and the final norm");
        long kvOne = 2L * 4 * 64 * 2 * 16 * 2;
        Assert.AreEqual(kvOne, DeviceMemoryBudget.Compute(one, chip, 4096, "block_0").KvCacheBytes);
        Assert.AreEqual(kvOne / 2, d0.KvCacheBytes);
        Assert.AreEqual(kvOne / 2, d1.KvCacheBytes);
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => DeviceMemoryBudget.Compute(two, chip, 0, "x", 2));

        var small = two with { DeviceMemoryMiB = 1 };
        var e = Assert.ThrowsExactly<LlmBuildException>(() => DeviceMemoryBudget.Compute(small, chip, 2 << 20, "block_0_s1_d1", 1).Check(small, chip));
        Assert.AreEqual(ErrorCodes.DeviceMemoryOverflow, e.Code);
        StringAssert.Contains(e.Message, "on device 1 (of NumDevice=2)");
        StringAssert.Contains(e.Message, "activations 2.0 MiB of block_0_s1_d1");
    }

    [TestMethod]
    public void CompileStageRefusesAnUnsplittableModel()
    {
        var built = ExampleBuild.Get("bf16", 64, 64, "bm1684x", ("NumDevice", "2"));
        var model = built.Model with { Options = built.Model.Options with { NumDevice = 4 } };
        foreach (string piece in new[] { "block_0", "embedding" })
        {
            var e = Assert.ThrowsExactly<LlmBuildException>(() =>
                CompileStage.Build(model, model.Piece(piece), Path.Combine(built.Dir, piece + ".mlir")));
            Assert.AreEqual(ErrorCodes.TensorParallelSplit, e.Code);
        }
    }

    [TestMethod]
    public void CompileStageChecksEveryDevice()
    {
        var built = ExampleBuild.Get("bf16", 64, 64, "bm1684x", ("NumDevice", "2"));
        // Device 0 holds the embedding and lm_head tables (18.5 MiB each), more than 30 MiB; the message names the device.
        var model = built.Model with { DeviceMemoryMiB = 30 };
        var e = Assert.ThrowsExactly<LlmBuildException>(() =>
            CompileStage.Build(model, model.Piece("block_0"), Path.Combine(built.Dir, "block_0.mlir")));
        Assert.AreEqual(ErrorCodes.DeviceMemoryOverflow, e.Code);
        StringAssert.Contains(e.Message, "on device 0 (of NumDevice=2)");
    }
}
