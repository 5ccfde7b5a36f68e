using LlmBuild.Core.Serving;
using LlmBuild.Core.Tests.Tokenization;
using LlmBuild.Core.Tokenization;

namespace LlmBuild.Core.Tests.Serving;

[TestClass]
public sealed class GenerationTextTests
{
    private static Tokenizer Qwen => TokenizerFixtures.Get("qwen2.5-7b-instruct");

    /// <summary>A generation fed by hand, as the engine would: the ids of <paramref name="text"/> one at a time.</summary>
    private static Generation Fed(string text, GenerationEnd end)
    {
        var generation = new Generation([1], new GenerationSettings(null, 0, null));
        foreach (int id in Qwen.Encode(text, addSpecialTokens: false)) generation.Write(id);
        generation.Finish(end);
        return generation;
    }

    private static async Task<(List<string> Pieces, CompletionOutcome Outcome)> Read(Generation generation, params string[] stop)
    {
        var pieces = new List<string>();
        var outcome = await GenerationText.ReadAsync(generation, Qwen, stop, p => { pieces.Add(p); return Task.CompletedTask; }, CancellationToken.None);
        return (pieces, outcome);
    }

    [TestMethod]
    public async Task MultiByteCharactersAreNeverSplitAcrossPieces()
    {
        const string text = "Grüße, 你好 龘 🫠🦩 naïve café — ꙮ done";
        // Byte-level BPE splits the rare characters (龘, 🫠, 🦩, ꙮ) over two or three tokens each.
        Assert.IsTrue(Qwen.Encode(text, false).Any(id => Qwen.Decode([id]).Contains('\uFFFD')));
        var (pieces, outcome) = await Read(Fed(text, GenerationEnd.EndOfSequence));
        Assert.AreEqual(text, string.Concat(pieces));
        Assert.IsFalse(pieces.Any(p => p.Contains('\uFFFD')), string.Join(" | ", pieces));
        Assert.AreEqual("stop", outcome.FinishReason);
        Assert.AreEqual(Qwen.Encode(text, false).Length, outcome.CompletionTokens);
    }

    [TestMethod]
    public async Task StopSequenceSplitOverTokensIsNeverShownAndEndsTheGeneration()
    {
        var generation = Fed("The moon is made of green cheese, they say.", GenerationEnd.MaxTokens);
        var (pieces, outcome) = await Read(generation, "green che", "nothing");
        Assert.AreEqual("The moon is made of ", string.Concat(pieces));
        Assert.IsFalse(pieces.Any(p => p.Contains("gre")), string.Join(" | ", pieces));
        Assert.AreEqual("stop", outcome.FinishReason);
        Assert.IsTrue(generation.IsCancelled, "the engine is told to stop generating");
        Assert.IsTrue(outcome.CompletionTokens < Qwen.Encode("The moon is made of green cheese, they say.", false).Length);
    }

    [TestMethod]
    public async Task TextHeldForAStopSequenceThatNeverCompletesIsReleasedAtTheEnd()
    {
        var (pieces, outcome) = await Read(Fed("Hello wor", GenerationEnd.MaxTokens), "world");
        Assert.AreEqual("Hello wor", string.Concat(pieces));
        Assert.AreEqual("length", outcome.FinishReason);
    }

    [TestMethod]
    public void StopSequencesHoldOnlyWhatCouldStartOne()
    {
        var stops = new StopSequences(["abc", "xyz"]);
        Assert.AreEqual(("hello ", false), stops.Push("hello a"));
        Assert.AreEqual(("", false), stops.Push("b"));
        Assert.AreEqual(("abx", false), stops.Push("xx"));
        Assert.AreEqual(("x", true), stops.Push("xyzabc"));
        Assert.AreEqual("", stops.Flush());
    }
}
