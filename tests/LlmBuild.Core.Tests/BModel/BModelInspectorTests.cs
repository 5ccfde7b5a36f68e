using System.Text.Json;
using LlmBuild.Core.BModel;
using LlmBuild.Core.Plan;

namespace LlmBuild.Core.Tests.BModel;

[TestClass]
public sealed class BModelInspectorTests
{
    [TestMethod]
    public void TextMatchesModelToolLayout()
    {
        var (model, _) = BModelSamples.Piece("block_0", 16, 1);
        // weight: one 1000-byte coeff; instruct: bdc 96+16 + gdma 128+16 of the subnet's cmd group;
        // runtime: ctx 4096*16 + the largest staging buffer, input_states 1*16*64 elements * 4 bytes.
        const string expected = """
            bmodel version: B.2.2
            chip: BM1684X
            create time: fixed-time
            kernel_module name: libbm1684x_kernel_module.so
            kernel_module size: 300
            ==========================================
            net 0: [block_0]  static
            ------------
            stage 0:
            input: input_states, [1, 16, 64], bfloat16, scale: 1, zero_point: 0
            input: position_ids, [1, 16], int32, scale: 1, zero_point: 0
            input: attention_mask, [1, 1, 16, 16], bfloat16, scale: 1, zero_point: 0
            output: output_states, [1, 16, 64], bfloat16, scale: 0.5, zero_point: -3
            output: k_cache, [1, 16, 2, 16], bfloat16, scale: 1, zero_point: 0

            device mem size: 70888 (weight: 1000, instruct: 256, runtime: 69632)
            host mem size: 0 (weight: 0, runtime: 0)

            """;
        Assert.AreEqual(expected.ReplaceLineEndings("\n"), BModelInspector.Text(model));
    }

    [TestMethod]
    public void TextShowsAddrModeDynamicShapesAndSubnets()
    {
        var (model, _) = BModelSamples.Piece("block_cache_0", 1, 1, addrMode: 1);
        var stage = model.Nets[0].Stages[0] with { IsDynamic = true, NDynamic = 1, SubNets = [new SubNet(), new SubNet { SubnetMode = 1 }] };
        model = model with { Nets = [model.Nets[0] with { Stages = [stage] }], DeviceNum = 2, KernelModule = null };
        string text = BModelInspector.Text(model);
        StringAssert.Contains(text, "chip: BM1684X,  device num: 2\n");
        StringAssert.Contains(text, "no kernel_module\n");
        StringAssert.Contains(text, "net 0: [block_cache_0]  dynamic\naddr mode: 1\n");
        StringAssert.Contains(text, "subnet number: 2\n");
        StringAssert.Contains(text, "input: input_states, [max:1, max:1, max:64], bfloat16");
        StringAssert.Contains(text, "output: output_states, [1, 1, 64], bfloat16");
    }

    [TestMethod]
    public void CascadeNetsAreGroupedByMainName()
    {
        var t = BModelSamples.Tensor("x", BModelDataType.Float32, 2);
        NetInfo Part(string name, uint dev, int hidden) => new()
        {
            Name = name,
            Cascade = new Cascade(dev, 0, "main"),
            Stages = [new NetParameter { InputTensors = [t with { Name = name + "_in", Hidden = hidden }], OutputTensors = [t with { Name = name + "_out", Hidden = 2 }] }],
        };
        var model = new BModelFile { Chip = "BM1684X", Nets = [Part("p1", 1, 1), Part("p0", 0, 1)] };
        string text = BModelInspector.Text(model);
        StringAssert.Contains(text, "net: [main]  cascade\ninput: devid(0) p0_in, [2], float32, scale: 1, zero_point: 0\ninput: devid(1) p1_in");
        Assert.IsFalse(text.Contains("net 0:"), "cascade parts are not listed as nets");
    }

    [TestMethod]
    public void JsonCarriesTheSameFacts()
    {
        var (model, _) = BModelSamples.Piece("block_0", 16, 1);
        using var doc = JsonDocument.Parse(BModelInspector.Json(model));
        var root = doc.RootElement;
        Assert.AreEqual("B.2.2", root.GetProperty("version").GetString());
        Assert.AreEqual("BM1684X", root.GetProperty("chip").GetString());
        var net = root.GetProperty("nets")[0];
        Assert.AreEqual("block_0", net.GetProperty("name").GetString());
        Assert.IsFalse(net.GetProperty("dynamic").GetBoolean());
        var output = net.GetProperty("stages")[0].GetProperty("outputs")[0];
        Assert.AreEqual("output_states", output.GetProperty("name").GetString());
        Assert.AreEqual(0.5, output.GetProperty("scale").GetDouble());
        Assert.AreEqual(-3, output.GetProperty("zeroPoint").GetInt32());
        CollectionAssert.AreEqual(new long[] { 1, 16, 64 }, output.GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()).ToArray());
        Assert.AreEqual(70888ul, root.GetProperty("deviceMemory").GetProperty("total").GetUInt64());
        Assert.AreEqual(BModelInspector.Json(model), BModelInspector.Json(model));
    }

    [TestMethod]
    public void FloatsPrintLikeCStreams()
    {
        // Expected strings are printf("%g") outputs.
        Assert.AreEqual("1", BModelInspector.FormatFloat(1f));
        Assert.AreEqual("0.5", BModelInspector.FormatFloat(0.5f));
        Assert.AreEqual("1e-05", BModelInspector.FormatFloat(1e-5f));
        Assert.AreEqual("0.0001", BModelInspector.FormatFloat(1e-4f));
        Assert.AreEqual("0.00392157", BModelInspector.FormatFloat(1f / 255f));
        Assert.AreEqual("100000", BModelInspector.FormatFloat(100000f));
        Assert.AreEqual("1.23457e+06", BModelInspector.FormatFloat(1234567f));
        Assert.AreEqual("-2.5e+20", BModelInspector.FormatFloat(-2.5e20f));
    }
}
