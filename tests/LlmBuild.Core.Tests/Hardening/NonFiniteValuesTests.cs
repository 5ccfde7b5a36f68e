using System.Text.Json.Nodes;
using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Models;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Quantization;
using LlmBuild.Core.Stages;
using LlmBuild.Core.Tests.Codegen;

namespace LlmBuild.Core.Tests.Hardening;

/// <summary>
/// Issue 19, cause 3: NaN or infinity outside the quantized linears (an embedding row, a norm, a bias) and numeric
/// config fields that make NaN (rms_norm_eps ≤ 0, rope_theta ≤ 0) are coded errors naming the tensor and index or the
/// field; a verify report with NaN figures is written rather than thrown on.
/// </summary>
[TestClass]
public sealed class NonFiniteValuesTests
{
    private static ResolvedModel Resolve(string quantize) => ExampleBuild.Resolve(new Dictionary<string, string?>
    {
        ["ModelPath"] = ExampleBuild.ModelDir, ["SeqLength"] = "16", ["Quantize"] = quantize, ["QGroupSize"] = "64",
    });

    [TestMethod]
    [DataRow("bf16", "embedding", "model.embed_tokens.weight", 64L * 1000 + 5, float.NaN, DisplayName = "bf16 embedding, copied raw")]
    [DataRow("f16", "embedding", "model.embed_tokens.weight", 64L * 77 + 3, float.PositiveInfinity, DisplayName = "f16 embedding, converted")]
    [DataRow("w4bf16", "block_1", "model.layers.1.input_layernorm.weight", 17L, float.NaN, DisplayName = "norm, w4 build")]
    [DataRow("w4bf16", "block_2", "model.layers.2.self_attn.k_proj.bias", 9L, float.NegativeInfinity, DisplayName = "bias, w4 build")]
    [DataRow("bf16", "block_0", "model.layers.0.self_attn.q_proj.bias", 63L, float.NaN, DisplayName = "bias, bf16 build")]
    [DataRow("f16", "block_0", "model.layers.0.post_attention_layernorm.weight", 2L, 1e6f, DisplayName = "finite bf16 beyond the f16 range")]
    public void NonFiniteTensorIsACodedErrorNamingTensorAndIndex(string quantize, string owner, string tensor, long element, float value)
    {
        ResolvedModel model = Resolve(quantize);
        using var checkpoint = new PoisonedCheckpoint(CheckpointLoader.Open(ExampleBuild.ModelDir), tensor, element, value);
        using var sink = new MemoryStream();
        var e = Assert.ThrowsExactly<LlmBuildException>(() => WeightOwnerWriter.Write(checkpoint, model, model.Owner(owner), sink));
        Assert.AreEqual(ErrorCodes.NonFiniteWeight, e.Code, e.Message);
        StringAssert.Contains(e.Message, $"'{tensor}'");
        StringAssert.Contains(e.Message, $"element {element}");
    }

    [TestMethod]
    public void EmbeddingBinRefusesNonFiniteRows()
    {
        ResolvedModel model = Resolve("bf16");
        using var checkpoint = new PoisonedCheckpoint(CheckpointLoader.Open(ExampleBuild.ModelDir), "model.embed_tokens.weight", 64L * 150000 + 1, float.NaN);
        string path = Path.Combine(Path.GetTempPath(), $"embedding-{Guid.NewGuid():N}.bin");
        var e = Assert.ThrowsExactly<LlmBuildException>(() => EmbeddingBin.Write(checkpoint, model, path));
        Assert.AreEqual(ErrorCodes.NonFiniteWeight, e.Code);
        StringAssert.Contains(e.Message, "[150000, 1]");
        Assert.IsFalse(File.Exists(path), "nothing half-written");
    }

    [TestMethod]
    [DataRow("rms_norm_eps", "-1")]
    [DataRow("rms_norm_eps", "0")]
    [DataRow("rope_theta", "0")]
    [DataRow("rope_theta", "-10000")]
    public void NumericConfigFieldThatMakesNaNIsACodedError(string field, string value)
    {
        var root = (JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(ExampleBuild.ModelDir, "config.json")))!;
        root[field] = JsonNode.Parse(value);
        var e = Assert.ThrowsExactly<LlmBuildException>(() => ModelConfig.FromJson(root, null, "config.json"));
        Assert.AreEqual(ErrorCodes.BadModelConfig, e.Code);
        StringAssert.Contains(e.Message, $"\"{field}\"");
        StringAssert.Contains(e.Message, "positive");
    }

    [TestMethod]
    public void VerifyReportWithNaNFiguresIsWritten()
    {
        var report = new VerifyReport
        {
            Model = "m", Quantize = "bf16", Chip = "bm1684x", Tokens = [1, 2], PromptLength = 1,
            Pieces = [new PieceFidelity("block_0", 1, double.NaN, double.PositiveInfinity)],
            Logits = new LogitsFidelity(1, double.NaN, double.NaN, double.NaN, 0),
            Thresholds = new VerifyThresholds(0.99, 0.99, 0.9), Failures = ["block_0 cosine NaN < 0.99"],
        };
        string json = report.ToJson();
        StringAssert.Contains(json, "\"NaN\"");
        Assert.IsTrue(report.Table().Any(l => l.Contains("NaN", StringComparison.Ordinal)));
    }
}
