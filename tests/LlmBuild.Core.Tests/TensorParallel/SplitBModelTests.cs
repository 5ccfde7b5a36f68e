using TP = LlmBuild.Core.Plan.TensorParallel;
using LlmBuild.Core.BModel;
using LlmBuild.Core.Graph;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Runtime;
using LlmBuild.Core.Stages;
using LlmBuild.Core.Tests.Codegen;

namespace LlmBuild.Core.Tests.TensorParallel;

/// <summary>
/// The example built with NumDevice=2 through the real stages: the piece bmodels of the blocks hold the 3·D cascade
/// nets the runtime contract names, the other pieces are unchanged, the combine keeps the nets and shares the shards'
/// weights between block_i and block_cache_i, and the compiled nets, run in the emulator with the all-reduce done here,
/// give the one-device build's outputs.
/// </summary>
[TestClass]
public sealed class SplitBModelTests
{
    private static ExampleBuild.Built TwoDevices(string quantize = "bf16", int groupSize = 64) =>
        ExampleBuild.Get(quantize, 64, groupSize, "bm1684x", ("NumDevice", "2"));

    private static readonly string[] NetOrder =
        ["s0_d0", "s0_d1", "s1_d0", "s1_d1", "s2_d0", "s2_d1"];

    [TestMethod]
    public void BlockPiecesHoldTheCascadeNetsOfTheContract()
    {
        var built = TwoDevices();
        using var c = BModelReader.Read(built.PieceBModels["block_cache_0"]);
        Assert.AreEqual(2u, c.Model.DeviceNum);
        CollectionAssert.AreEqual(NetOrder.Select(n => "block_cache_0_" + n).ToArray(), c.Model.Nets.Select(n => n.Name).ToArray());
        for (int i = 0; i < c.Model.Nets.Count; i++)
        {
            var cascade = c.Model.Nets[i].Cascade!;
            Assert.AreEqual(((uint)(i % 2), (uint)(i / 2), "block_cache_0"), (cascade.DeviceId, cascade.Step, cascade.MainName));
        }
        string Describe(BModelTensor t) => $"{t.Name} {BModelDataTypes.Name(t.DataType)} [{string.Join(",", t.Shape)}] h{t.Hidden} i{t.Index}";
        string[] Io(string net, bool outputs)
        {
            var stage = c.Model.Nets.Single(n => n.Name == net).Stages.Single();
            return (outputs ? stage.OutputTensors : stage.InputTensors).Select(Describe).ToArray();
        }
        CollectionAssert.AreEqual(new[]
        {
            "input_states_1 bfloat16 [1,1,64] h3 i0", "position_ids_1 int32 [1,1] h3 i1", "attention_mask_1 bfloat16 [1,1,1,65] h3 i2",
            "history_k_1 bfloat16 [1,64,1,16] h3 i3", "history_v_1 bfloat16 [1,64,1,16] h3 i4",
        }, Io("block_cache_0_s0_d1", false));
        CollectionAssert.AreEqual(new[] { "attn_partial_1 float32 [1,1,64] h0 i0", "k_cache_1 bfloat16 [1,1,1,16] h4 i1", "v_cache_1 bfloat16 [1,1,1,16] h4 i2" },
            Io("block_cache_0_s0_d1", true));
        CollectionAssert.AreEqual(new[] { "input_states_0 bfloat16 [1,1,64] h3 i0", "attn_partial_0 float32 [1,1,64] h0 i0", "attn_partial_1 float32 [1,1,64] h0 i0" },
            Io("block_cache_0_s1_d0", false));
        CollectionAssert.AreEqual(new[] { "residual_0 float32 [1,1,64] h0 i0", "mlp_partial_0 float32 [1,1,64] h0 i0" }, Io("block_cache_0_s1_d0", true));
        CollectionAssert.AreEqual(new[] { "residual_1 float32 [1,1,64] h0 i0", "mlp_partial_0 float32 [1,1,64] h0 i0", "mlp_partial_1 float32 [1,1,64] h0 i0" },
            Io("block_cache_0_s2_d1", false));
        CollectionAssert.AreEqual(new[] { "output_states_1 bfloat16 [1,1,64] h4 i0" }, Io("block_cache_0_s2_d1", true));
        c.VerifyCheckCodes();
        Assert.AreEqual(c.Model.Nets.Max(n => n.Stages[0].CtxSize), c.Model.NeuronSize);

        foreach (string piece in new[] { "embedding", "embedding_cache", "lm_head" })
        {
            using var whole = BModelReader.Read(built.PieceBModels[piece]);
            var net = whole.Model.Nets.Single();
            Assert.AreEqual(piece, net.Name);
            Assert.IsNull(net.Cascade);
            Assert.AreEqual(2u, whole.Model.DeviceNum);
        }
    }

    [TestMethod]
    public void CombineKeepsTheNetsAndStoresSharedShardWeightsOnce()
    {
        var built = TwoDevices("w4bf16", 32);
        using var combined = BModelReader.Read(built.BModel);
        var nets = combined.Model.Nets;
        Assert.AreEqual(2u, combined.Model.DeviceNum);
        Assert.AreEqual(3 + 4 * 2 * 2 * TP.Steps, nets.Count, "embedding, embedding_cache, lm_head and 6 nets per block piece");
        foreach (string suffix in NetOrder)
        {
            var block = nets.Single(n => n.Name == "block_2_" + suffix);
            var cache = nets.Single(n => n.Name == "block_cache_2_" + suffix);
            Assert.AreEqual("block_2", block.Cascade!.MainName);
            Assert.AreEqual("block_cache_2", cache.Cascade!.MainName);
            Assert.AreEqual(block.Stages[0].CoeffMem?.BinaryCoeff, cache.Stages[0].CoeffMem?.BinaryCoeff, suffix);
            Assert.AreEqual(suffix.StartsWith("s2", StringComparison.Ordinal), block.Stages[0].CoeffMem is null, $"{suffix}: only the reduce step has no weights");
        }
        var s0 = nets.Where(n => n.Name is "block_2_s0_d0" or "block_2_s0_d1").Select(n => n.Stages[0].CoeffMem!.BinaryCoeff).ToArray();
        Assert.AreNotEqual(s0[0], s0[1], "each device has its own slices");
        combined.VerifyCheckCodes();

        string text = BModelInspector.Text(combined.Model);
        StringAssert.Contains(text, "net: [block_cache_2]  cascade\n" +
            "input: devid(0) input_states_0, [1, 1, 64], bfloat16, scale: 1, zero_point: 0\n" +
            "input: devid(0) position_ids_0, [1, 1], int32, scale: 1, zero_point: 0\n");
        StringAssert.Contains(text, "output: devid(1) output_states_1, [1, 1, 64], bfloat16, scale: 1, zero_point: 0\n" +
            "output: devid(1) k_cache_1, [1, 1, 1, 16], bfloat16, scale: 1, zero_point: 0\n");
        StringAssert.Contains(text, "chip: BM1684X-EMU,  device num: 2\n");
        Assert.IsFalse(text.Contains("attn_partial"), "inter-step tensors are not main-net I/O");
        StringAssert.Contains(text, "net 0: [embedding]  static");
    }

    [TestMethod]
    public void SplitPiecesAreDeterministic()
    {
        var built = TwoDevices();
        var (file, blob) = CompileStage.Build(built.Model, built.Model.Piece("block_1"), Path.Combine(built.Dir, "block_1_top_weights.npz"));
        CollectionAssert.AreEqual(File.ReadAllBytes(built.PieceBModels["block_1"]), BModelWriter.ToBytes(file, blob));
    }

    [TestMethod]
    public void EmulatedDevicesGiveTheOneDeviceOutputs()
    {
        foreach (var (quantize, group) in new[] { ("bf16", 64), ("w4bf16", 32) })
        {
            var one = ExampleBuild.Get(quantize, 64, group);
            var two = TwoDevices(quantize, group);
            foreach (string piece in new[] { "block_1", "block_cache_2" })
            {
                var inputs = SplitRun.Inputs(PieceGraphBuilder.Build(one.Model, one.Model.Piece(piece)), seed: 7);
                var whole = RunWhole(one.PieceBModels[piece], piece, inputs);
                var split = RunSplit(two.PieceBModels[piece], piece, inputs, two.Model);
                foreach (string name in new[] { "output_states", "k_cache", "v_cache" })
                {
                    double diff = SplitRun.RelativeDiff(split[name], whole[name]);
                    Console.WriteLine($"{quantize} {piece} {name}: emulator 2 devices vs 1, relative max diff {diff:E2}");
                    // Both are rounded to bf16 at the net output; summation order may move a value by one bf16 step (2^-8 relative).
                    Assert.IsTrue(diff <= 1.0 / 128, $"{quantize} {piece} {name}: {diff:E3}");
                }
            }
        }
    }

    private static Dictionary<string, float[]> Launch(EmulatorRuntime rt, string netName, Func<string, float[]> input)
    {
        EmulatorNet net = rt.Net(netName);
        for (int i = 0; i < net.Inputs.Count; i++) rt.WriteFloat(net.InputMems[i], net.Inputs[i].DType, input(net.Inputs[i].Name));
        rt.Launch(net);
        var result = new Dictionary<string, float[]>(StringComparer.Ordinal);
        for (int i = 0; i < net.Outputs.Count; i++) result[net.Outputs[i].Name] = rt.ReadFloat(net.OutputMems[i], net.Outputs[i].DType, net.Outputs[i].Count);
        return result;
    }

    private static Dictionary<string, float[]> RunWhole(string bmodel, string piece, Dictionary<string, float[]> inputs)
    {
        using var rt = EmulatorRuntime.Load(bmodel);
        return Launch(rt, piece, name => inputs[name]);
    }

    /// <summary>The runtime's side of the contract: per-device inputs, hidden inputs copied from the step before, k/v gathered.</summary>
    private static Dictionary<string, float[]> RunSplit(string bmodel, string piece, Dictionary<string, float[]> inputs, ResolvedModel model)
    {
        int devices = TP.Devices(model), kvh = model.Config.NumKvHeads, d = model.Config.HeadDim;
        using var rt = EmulatorRuntime.Load(bmodel);
        var device = new Dictionary<string, float[]>(StringComparer.Ordinal);
        for (int dev = 0; dev < devices; dev++)
            foreach (var (name, data) in inputs)
                device[TP.DeviceTensorName(name, dev)] = name is "history_k" or "history_v" ? SplitRun.Heads(data, kvh, d, dev * kvh / devices, kvh / devices) : data;
        for (int step = 0; step < TP.Steps; step++)
        {
            var produced = new List<Dictionary<string, float[]>>();
            for (int dev = 0; dev < devices; dev++) produced.Add(Launch(rt, TP.NetName(piece, step, dev), name => device[name]));
            foreach (var o in produced)
                foreach (var (name, data) in o) device[name] = data;
        }
        return new Dictionary<string, float[]>
        {
            ["output_states"] = device["output_states_0"],
            ["k_cache"] = SplitRun.GatherHeads(Enumerable.Range(0, devices).Select(i => device[TP.DeviceTensorName("k_cache", i)]).ToArray(), kvh / devices, d),
            ["v_cache"] = SplitRun.GatherHeads(Enumerable.Range(0, devices).Select(i => device[TP.DeviceTensorName("v_cache", i)]).ToArray(), kvh / devices, d),
        };
    }
}
