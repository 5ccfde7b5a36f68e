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
}
