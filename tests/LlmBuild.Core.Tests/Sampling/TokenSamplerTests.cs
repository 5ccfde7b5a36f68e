using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Runtime;

namespace LlmBuild.Core.Tests.Sampling;

[TestClass]
public sealed class TokenSamplerTests
{
    private static readonly float[] Logits = [1.0f, 3.0f, 2.0f, 2.9f, -1f];

    [TestMethod]
    public void GreedyPicksTheArgmax() => Assert.AreEqual(1, new TokenSampler(null).Next(Logits));

    [TestMethod]
    public void TopKOfOneOrTinyTopPIsGreedy()
    {
        for (int seed = 0; seed < 50; seed++)
        {
            Assert.AreEqual(1, new TokenSampler(new SamplingOptions(Temperature: 2, TopK: 1), seed).Next(Logits));
            Assert.AreEqual(1, new TokenSampler(new SamplingOptions(Temperature: 1, TopK: 0, TopP: 0.01), seed).Next(Logits));
        }
    }

    [TestMethod]
    public void SamplingFollowsTheSoftmaxOfTheTopK()
    {
        // top-k 2 keeps ids 1 (3.0) and 3 (2.9): p(1) = 1 / (1 + e^-0.1) ≈ 0.525.
        var sampler = new TokenSampler(new SamplingOptions(Temperature: 1, TopK: 2), seed: 7);
        int ones = 0, n = 20000;
        for (int i = 0; i < n; i++)
        {
            int id = sampler.Next(Logits);
            Assert.IsTrue(id is 1 or 3, $"only the top 2 are drawn, got {id}");
            if (id == 1) ones++;
        }
        Assert.AreEqual(1 / (1 + Math.Exp(-0.1)), ones / (double)n, 0.02);
    }

    [TestMethod]
    public void RepetitionPenaltyDemotesRecentTokens()
    {
        var sampler = new TokenSampler(new SamplingOptions(Temperature: 0.01, TopK: 0, RepetitionPenalty: 1.3));
        sampler.Observe([1]);
        // 3.0 / 1.3 ≈ 2.31 < 2.9: id 3 now wins.
        Assert.AreEqual(3, sampler.Next(Logits));
    }

    [TestMethod]
    public void SameSeedSameTokens()
    {
        var a = new TokenSampler(new SamplingOptions(TopK: 5), seed: 3);
        var b = new TokenSampler(new SamplingOptions(TopK: 5), seed: 3);
        for (int i = 0; i < 100; i++) Assert.AreEqual(a.Next(Logits), b.Next(Logits));
    }

    [TestMethod]
    [DataRow("""{"temperature": "hot"}""", "temperature must be a number of at least 0, found the string \"hot\"")]
    [DataRow("""{"temperature": -0.5}""", "temperature must be a number of at least 0, found the number -0.5")]
    [DataRow("""{"top_k": -3}""", "top_k must be an integer from 0 to 2147483647, found the number -3")]
    [DataRow("""{"top_k": 2.5}""", "top_k must be an integer from 0 to 2147483647, found the number 2.5")]
    [DataRow("""{"top_p": 1.5}""", "top_p must be a number from 0 to 1, found the number 1.5")]
    [DataRow("""{"repetition_penalty": 0}""", "repetition_penalty must be greater than 0")]
    [DataRow("""[1]""", "the document must be an object, found a list")]
    [DataRow("""{"top_k": """, "not valid JSON")]
    public void BadGenerationConfigIsACodedError(string json, string fragment)
    {
        string dir = Path.Combine(Path.GetTempPath(), "llmb-gen-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "generation_config.json"), json);
        var e = Assert.ThrowsExactly<LlmBuildException>(() => SamplingOptions.FromGenerationConfig(dir));
        Assert.AreEqual(ErrorCodes.BadGenerationConfig, e.Code, e.Message);
        StringAssert.Contains(e.Message, fragment);
        StringAssert.Contains(e.Message, "generation_config.json");
    }

    [TestMethod]
    public void NullFieldsTakeTheDefaults()
    {
        string dir = Path.Combine(Path.GetTempPath(), "llmb-gen-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "generation_config.json"), """{"temperature": null, "top_k": 20, "top_p": 0.8}""");
        Assert.AreEqual(new SamplingOptions(TopK: 20, TopP: 0.8), SamplingOptions.FromGenerationConfig(dir));
    }
}
