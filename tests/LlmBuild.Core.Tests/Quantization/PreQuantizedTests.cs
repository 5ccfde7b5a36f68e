using System.Text.Json.Nodes;
using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Models;
using LlmBuild.Core.Numerics;
using LlmBuild.Core.Numpy;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Quantization;
using LlmBuild.Core.Tests.Checkpoints;

namespace LlmBuild.Core.Tests.Quantization;

/// <summary>
/// Pre-quantized sources. The packers below are written in the tests from the libraries' published packing rules
/// (AutoGPTQ: values along K, lowest bits first, zeros − 1 along N; AutoAWQ gemm: along N in nibble order
/// 0,2,4,6,1,3,5,7; compressed-tensors: along K with a +2^(b−1) offset, zero points along N); the golden words pin
/// those rules to literal numbers.
/// </summary>
[TestClass]
public sealed class PreQuantizedTests
{
    private static string ExampleDir => Path.Combine(TestFiles.RepoRoot(), "examples", "tiny-qwen2", "checkpoint");

    private sealed record Source(int N, int K, int Bits, int G, int[,] Q, int[,] Zeros, float[,] Scales, int[] GIdx)
    {
        /// <summary>The source's own dequantization: scale[g_idx[k], n] · (q[k, n] − zero[g_idx[k], n]).</summary>
        public float W(int n, int k) => Scales[GIdx[k], n] * (Q[k, n] - Zeros[GIdx[k], n]);
    }

    private static Source Random(int n, int k, int bits, int g, int seed, bool actOrder, bool symmetric = false)
    {
        var r = new Random(seed);
        int groups = k / g, qmax = (1 << bits) - 1;
        var q = new int[k, n];
        var zeros = new int[groups, n];
        var scales = new float[groups, n];
        for (int i = 0; i < k; i++) for (int j = 0; j < n; j++) q[i, j] = r.Next(qmax + 1);
        // Zeros 1..qmax so the classic "zero − 1" storage never underflows.
        for (int i = 0; i < groups; i++) for (int j = 0; j < n; j++)
        {
            zeros[i, j] = symmetric ? 1 << (bits - 1) : 1 + r.Next(qmax);
            scales[i, j] = FloatFormats.HalfToFloatScalar(FloatFormats.FloatToHalfScalar((float)(0.001 + r.NextDouble() * 0.01)));
        }
        int[] gIdx = Enumerable.Range(0, k).Select(i => i / g).ToArray();
        if (actOrder) gIdx = gIdx.OrderBy(_ => r.Next()).ToArray(); // desc_act: each group keeps g members, scattered over K
        return new Source(n, k, bits, g, q, zeros, scales, gIdx);
    }

    private static int[] PackGptqWeight(Source s) => PackingRules.Weight(s.Q, s.Bits);

    private static int[] PackGptqZeros(Source s, bool minusOne) => PackingRules.Zeros(s.Zeros, s.Bits, minusOne);

    private static int[] PackAwq(int rows, int n, Func<int, int, int> value) => PackingRules.Awq(rows, n, value);

    private static ushort[] ScalesF16(Source s)
    {
        int groups = s.K / s.G;
        var bits = new ushort[groups * s.N];
        for (int i = 0; i < groups; i++) for (int n = 0; n < s.N; n++) bits[i * s.N + n] = FloatFormats.FloatToHalfScalar(s.Scales[i, n]);
        return bits;
    }

    [TestMethod]
    public void GoldenWordsOfThePublishedPackingRules()
    {
        var s = new Source(8, 8, 4, 8, new int[8, 8], new int[1, 8], new float[1, 8], new int[8]);
        for (int k = 0; k < 8; k++) s.Q[k, 0] = k + 1;
        Assert.AreEqual(unchecked((int)0x87654321), PackGptqWeight(s)[0], "GPTQ: input k in bits 4k..4k+3");
        Assert.AreEqual(unchecked((int)0x86427531), PackAwq(1, 8, (_, n) => n + 1)[0], "AWQ: nibble j holds channel (0,2,4,6,1,3,5,7)[j]");
        for (int n = 0; n < 8; n++) s.Zeros[0, n] = n + 1;
        Assert.AreEqual(0x76543210, PackGptqZeros(s, minusOne: true)[0], "classic GPTQ stores zero − 1 along N");
    }

    private static ModelConfig ConfigWith(string quantizationConfig, string torchDtype = "float16") =>
        ModelConfig.Load(ExampleDir) with { QuantizationConfig = (JsonObject)JsonNode.Parse(quantizationConfig)!, TorchDtype = torchDtype };

    private static (NpzReader Npz, string Dir) WriteOwner(IEnumerable<TestFiles.Tensor> tensors, ModelConfig config, int n, int k, WeightStorage storage, string activation = "bf16")
    {
        string dir = TestFiles.TempDir();
        TestFiles.WriteSafetensors(Path.Combine(dir, "model.safetensors"), tensors);
        var source = PreQuantizedFormat.FromConfig(config.QuantizationConfig, "test")!;
        using var checkpoint = CheckpointLoader.Open(dir);
        // As resolve decides: a quantized entry is marked when its g_idx permutes the inputs.
        var entry = new WeightEntry(WeightRole.QProj, 0, "m.proj.weight", "m.proj.weight", storage, [n, k])
        {
            InputPermuted = storage == WeightStorage.Quantized && PreQuantizedUnpacker.PermutesInputs(checkpoint, source, "m.proj.weight"),
        };
        var owner = new WeightOwner("block_0", [entry]);
        var model = WeightOwnerWriterTests.Model(config, activation, new QuantScheme(source.Bits, source.GroupSize, source.Symmetric), [owner]);
        string npzPath = Path.Combine(dir, owner.FileName);
        WeightOwnerWriter.Write(checkpoint, model, owner, npzPath);
        return (new NpzReader(npzPath), dir);
    }

    /// <summary>Checks the npz's A16 layout dequantizes to the source's own values, element by element (exact).</summary>
    private static void AssertExact(NpzReader npz, Source s)
    {
        byte[] qw = npz.ReadBytes("m.proj.qweight");
        float[] scales = npz.ReadFloat32("m.proj.scales");
        byte[] zeros = npz.ReadBytes("m.proj.qzeros");
        int groups = s.K / s.G;
        CollectionAssert.AreEqual(new long[] { s.N, groups }, npz.GetEntry("m.proj.scales").Shape);
        int[] perm = npz.Contains("m.proj.input_perm")
            ? System.Runtime.InteropServices.MemoryMarshal.Cast<byte, int>(npz.ReadBytes("m.proj.input_perm")).ToArray()
            : Enumerable.Range(0, s.K).ToArray();
        var q = new QuantizedLinear(s.N, s.K, s.Bits, s.G, qw, scales, zeros);
        for (int n = 0; n < s.N; n++)
            for (int c = 0; c < s.K; c++)
            {
                float got = (q.Q(n, c) - zeros[n * groups + c / s.G]) * scales[n * groups + c / s.G];
                Assert.AreEqual(s.W(n, perm[c]), got, $"row {n}, stored column {c} (input {perm[c]})");
            }
    }

    private static IEnumerable<TestFiles.Tensor> GptqTensors(Source s, bool withGIdx = true, bool minusOne = true)
    {
        yield return new("m.proj.qweight", "I32", [s.K / (32 / s.Bits), s.N], TestFiles.Bytes(PackGptqWeight(s)));
        yield return new("m.proj.qzeros", "I32", [s.K / s.G, s.N / (32 / s.Bits)], TestFiles.Bytes(PackGptqZeros(s, minusOne)));
        yield return new("m.proj.scales", "F16", [s.K / s.G, s.N], TestFiles.Bytes(ScalesF16(s)));
        if (withGIdx) yield return new("m.proj.g_idx", "I32", [s.K], TestFiles.Bytes(s.GIdx));
    }

    [TestMethod]
    [DataRow(4, 32, false)]
    [DataRow(8, 64, false)]
    [DataRow(4, 128, true)]
    [DataRow(8, 32, true)]
    public void GptqUnpacksExactly(int bits, int g, bool symmetric)
    {
        var s = Random(64, 128, bits, g, bits * 100 + g, actOrder: false, symmetric);
        var config = ConfigWith($$"""{"quant_method": "gptq", "bits": {{bits}}, "group_size": {{g}}, "sym": {{(symmetric ? "true" : "false")}}, "desc_act": false}""");
        var (npz, _) = WriteOwner(GptqTensors(s), config, 64, 128, WeightStorage.Quantized);
        using (npz)
        {
            Assert.IsFalse(npz.Contains("m.proj.input_perm"), "a trivial g_idx needs no permutation");
            AssertExact(npz, s);
        }
    }

    [TestMethod]
    public void GptqV2StoresZeroAsIs()
    {
        var s = Random(32, 64, 4, 32, 5, actOrder: false);
        var config = ConfigWith("""{"quant_method": "gptq", "bits": 4, "group_size": 32, "sym": false, "checkpoint_format": "gptq_v2"}""");
        var (npz, _) = WriteOwner(GptqTensors(s, minusOne: false), config, 32, 64, WeightStorage.Quantized);
        using (npz) AssertExact(npz, s);
    }

    [TestMethod]
    public void GptqActOrderGIdxIsHonouredAndIgnoringItWouldBeWrong()
    {
        var s = Random(48, 128, 4, 32, 11, actOrder: true);
        var config = ConfigWith("""{"quant_method": "gptq", "bits": 4, "group_size": 32, "sym": false, "desc_act": true}""");
        var (npz, dir) = WriteOwner(GptqTensors(s), config, 48, 128, WeightStorage.Quantized);
        using (npz)
        {
            Assert.IsTrue(npz.Contains("m.proj.input_perm"));
            CollectionAssert.AreEqual(new long[] { 128 }, npz.GetEntry("m.proj.input_perm").Shape);
            AssertExact(npz, s);
        }
        // An entry resolved before the g_idx changed (marked unpermuted) is stale: a coded error, not a wrong graph.
        using (var checkpoint = CheckpointLoader.Open(dir))
        {
            var stale = new WeightEntry(WeightRole.QProj, 0, "m.proj.weight", "m.proj.weight", WeightStorage.Quantized, [48, 128]);
            var model = WeightOwnerWriterTests.Model(config, "bf16", new QuantScheme(4, 32, false), [new WeightOwner("block_0", [stale])]);
            var e = Assert.ThrowsExactly<LlmBuildException>(() =>
                WeightOwnerWriter.Write(checkpoint, model, model.Owners[0], Path.Combine(dir, "stale.npz")));
            Assert.AreEqual(ErrorCodes.StaleIntermediate, e.Code);
        }
        // What a reader that ignores g_idx (group = k / g) would compute differs from the source's values.
        bool differs = false;
        for (int n = 0; n < s.N && !differs; n++)
            for (int k = 0; k < s.K && !differs; k++)
                differs = s.Scales[k / s.G, n] * (s.Q[k, n] - s.Zeros[k / s.G, n]) != s.W(n, k);
        Assert.IsTrue(differs, "the test's g_idx must matter");

        // Dequantized to the activation dtype, the weight comes back in the source's input order.
        var (npz2, _) = WriteOwner(GptqTensors(s), config, 48, 128, WeightStorage.Activation);
        using (npz2)
        {
            float[] w = npz2.ReadFloat32("m.proj.weight");
            for (int n = 0; n < s.N; n++)
                for (int k = 0; k < s.K; k++)
                    Assert.AreEqual(FloatFormats.BFloat16ToFloatScalar(FloatFormats.FloatToBFloat16Scalar(s.W(n, k))), w[n * s.K + k]);
        }
    }

    [TestMethod]
    public void AwqGemmUnpacksExactly()
    {
        var s = Random(64, 128, 4, 64, 21, actOrder: false);
        var tensors = new TestFiles.Tensor[]
        {
            new("m.proj.qweight", "I32", [s.K, s.N / 8], TestFiles.Bytes(PackAwq(s.K, s.N, (k, n) => s.Q[k, n]))),
            new("m.proj.qzeros", "I32", [s.K / s.G, s.N / 8], TestFiles.Bytes(PackAwq(s.K / s.G, s.N, (grp, n) => s.Zeros[grp, n]))),
            new("m.proj.scales", "F16", [s.K / s.G, s.N], TestFiles.Bytes(ScalesF16(s))),
        };
        var config = ConfigWith("""{"quant_method": "awq", "bits": 4, "group_size": 64, "zero_point": true, "version": "gemm"}""");
        var (npz, _) = WriteOwner(tensors, config, 64, 128, WeightStorage.Quantized);
        using (npz) AssertExact(npz, s);
    }

    [TestMethod]
    [DataRow("auto_round:auto_gptq")]
    [DataRow("auto_round")]
    public void AutoRoundGptqPackingsUnpackExactly(string packing)
    {
        var s = Random(32, 64, 4, 32, 31, actOrder: false);
        var config = ConfigWith($$"""{"quant_method": "auto-round", "bits": 4, "group_size": 32, "sym": false, "packing_format": "{{packing}}"}""");
        var (npz, _) = WriteOwner(GptqTensors(s, withGIdx: false), config, 32, 64, WeightStorage.Quantized);
        using (npz) AssertExact(npz, s);
    }

    [TestMethod]
    public void AutoRoundAwqPackingUnpacksExactly()
    {
        var s = Random(32, 64, 4, 32, 41, actOrder: false);
        var tensors = new TestFiles.Tensor[]
        {
            new("m.proj.qweight", "I32", [s.K, s.N / 8], TestFiles.Bytes(PackAwq(s.K, s.N, (k, n) => s.Q[k, n]))),
            new("m.proj.qzeros", "I32", [s.K / s.G, s.N / 8], TestFiles.Bytes(PackAwq(s.K / s.G, s.N, (grp, n) => s.Zeros[grp, n]))),
            new("m.proj.scales", "F16", [s.K / s.G, s.N], TestFiles.Bytes(ScalesF16(s))),
        };
        var config = ConfigWith("""{"quant_method": "auto-round", "bits": 4, "group_size": 32, "sym": false, "packing_format": "auto_round:auto_awq"}""");
        var (npz, _) = WriteOwner(tensors, config, 32, 64, WeightStorage.Quantized);
        using (npz) AssertExact(npz, s);
    }

    [TestMethod]
    [DataRow(4, false)]
    [DataRow(4, true)]
    [DataRow(8, false)]
    public void CompressedTensorsPackQuantizedUnpacksExactly(int bits, bool symmetric)
    {
        int n = 24, k = 96, g = 32, p = 32 / bits, offset = 1 << (bits - 1), mask = (1 << bits) - 1;
        var s = Random(n, k, bits, g, 51 + bits, actOrder: false, symmetric);
        // Stored: weight_packed [N, K/p] of (signed + offset) along K; weight_scale [N, G]; weight_zero_point [N/p, G] along N.
        var packed = new int[n * (k / p)];
        for (int r = 0; r < n; r++)
            for (int c = 0; c < k / p; c++)
            {
                uint w = 0;
                for (int j = 0; j < p; j++) w |= (uint)((s.Q[c * p + j, r] - offset + offset) & mask) << (bits * j);
                packed[r * (k / p) + c] = unchecked((int)w);
            }
        int groups = k / g;
        var scale = new ushort[n * groups];
        for (int r = 0; r < n; r++) for (int j = 0; j < groups; j++) scale[r * groups + j] = FloatFormats.FloatToHalfScalar(s.Scales[j, r]);
        var tensors = new List<TestFiles.Tensor>
        {
            new("m.proj.weight_packed", "I32", [n, k / p], TestFiles.Bytes(packed)),
            new("m.proj.weight_scale", "F16", [n, groups], TestFiles.Bytes(scale)),
            new("m.proj.weight_shape", "I32", [2], TestFiles.Bytes(new[] { n, k })),
        };
        if (!symmetric)
        {
            var zp = new int[(n + p - 1) / p * groups];
            for (int rr = 0; rr < (n + p - 1) / p; rr++)
                for (int j = 0; j < groups; j++)
                {
                    uint w = 0;
                    for (int i = 0; i < p && rr * p + i < n; i++) w |= (uint)(s.Zeros[j, rr * p + i] & mask) << (bits * i);
                    zp[rr * groups + j] = unchecked((int)w);
                }
            tensors.Add(new("m.proj.weight_zero_point", "I32", [(n + p - 1) / p, groups], TestFiles.Bytes(zp)));
        }
        string weights = $"\"num_bits\": {bits}, \"type\": \"int\", \"symmetric\": {(symmetric ? "true" : "false")}, \"strategy\": \"group\", \"group_size\": {g}";
        var config = ConfigWith("{\"quant_method\": \"compressed-tensors\", \"format\": \"pack-quantized\", \"config_groups\": {\"group_0\": {\"targets\": [\"Linear\"], \"weights\": {" + weights + "}}}}");
        var (npz, _) = WriteOwner(tensors, config, n, k, WeightStorage.Quantized);
        using (npz) AssertExact(npz, s);
    }

    [TestMethod]
    public void MissingOrMisshapenPackedTensorsAreCodedErrors()
    {
        var s = Random(32, 64, 4, 32, 61, actOrder: false);
        var config = ConfigWith("""{"quant_method": "gptq", "bits": 4, "group_size": 32, "sym": false}""");
        var noZeros = GptqTensors(s).Where(t => !t.Name.EndsWith("qzeros", StringComparison.Ordinal));
        var e = Assert.ThrowsExactly<LlmBuildException>(() => WriteOwner(noZeros, config, 32, 64, WeightStorage.Quantized));
        Assert.AreEqual(ErrorCodes.BadPreQuantizedTensor, e.Code);
        StringAssert.Contains(e.Message, "m.proj.qzeros");
        var wrongGroup = ConfigWith("""{"quant_method": "gptq", "bits": 4, "group_size": 16, "sym": false}""");
        Assert.AreEqual(ErrorCodes.BadPreQuantizedTensor, Assert.ThrowsExactly<LlmBuildException>(() => WriteOwner(GptqTensors(s), wrongGroup, 32, 64, WeightStorage.Quantized)).Code);
        e = Assert.ThrowsExactly<LlmBuildException>(() => WriteOwner(GptqTensors(s), config, 32, 128, WeightStorage.Quantized));
        Assert.AreEqual(ErrorCodes.TensorShapeMismatch, e.Code);
    }

    [TestMethod]
    public void IncompleteOrUnsupportedConfigsAreClearErrors()
    {
        LlmBuildException Parse(string json) => Assert.ThrowsExactly<LlmBuildException>(() => PreQuantizedFormat.FromConfig((JsonObject)JsonNode.Parse(json)!, "config.json quantization_config"));
        var e = Parse("""{"quant_method": "gptq", "bits": 4}""");
        Assert.AreEqual(ErrorCodes.QuantizationConfigIncomplete, e.Code);
        StringAssert.Contains(e.Message, "group_size");
        Assert.AreEqual(ErrorCodes.QuantizationConfigIncomplete, Parse("""{"quant_method": "awq", "group_size": 128}""").Code);
        Assert.AreEqual(ErrorCodes.QuantizationConfigIncomplete, Parse("""{"bits": 4, "group_size": 128}""").Code);
        Assert.AreEqual(ErrorCodes.UnsupportedQuantizationConfig, Parse("""{"quant_method": "bitsandbytes", "load_in_4bit": true}""").Code);
        Assert.AreEqual(ErrorCodes.UnsupportedQuantizationConfig, Parse("""{"quant_method": "gptq", "bits": 3, "group_size": 128}""").Code);
        Assert.AreEqual(ErrorCodes.UnsupportedQuantizationConfig, Parse("""{"quant_method": "awq", "bits": 4, "group_size": 128, "version": "gemv"}""").Code);
        Assert.AreEqual(ErrorCodes.QuantizationConfigIncomplete, Parse("""{"quant_method": "compressed-tensors", "format": "pack-quantized", "config_groups": {"g": {"weights": {"num_bits": 4, "strategy": "group"}}}}""").Code);
        var perChannel = PreQuantizedFormat.FromConfig((JsonObject)JsonNode.Parse("""{"quant_method": "gptq", "bits": 8, "group_size": -1, "desc_act": true}""")!, "x")!;
        Assert.AreEqual(0, perChannel.GroupSize);
        Assert.IsTrue(perChannel.DescAct && perChannel.Symmetric && perChannel.ZeroMinusOne);
    }
}
