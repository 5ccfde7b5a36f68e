
namespace LlmBuild.Core.Tests.Tokenization;

[TestClass]
public sealed class StreamingDecoderTests
{
    private static readonly string[] Texts =
    [
        "The quick brown fox", "  two leading spaces", "你好，世界", "🙂🙃 smile 👨‍👩‍👧", "Grüße aus Köln\n\nbye",
        "𠀀𝐀 mixed 東京タワー", "tab\t\tdouble   end ", "a\u00a0b",
    ];

    [TestMethod]
    [DataRow("qwen2.5-7b-instruct")]
    [DataRow("llama2-7b-chat")]
    [DataRow("minicpm3-4b")]
    public void StreamedTextEqualsTheFullDecodeAndNeverSplitsACharacter(string fixture)
    {
        var tokenizer = TokenizerFixtures.Get(fixture);
        foreach (string text in Texts)
        {
            int[] ids = tokenizer.Encode(text, addSpecialTokens: false);
            var stream = tokenizer.CreateStreamingDecoder();
            string streamed = "";
            foreach (int id in ids)
            {
                string piece = stream.Push(id);
                Assert.IsFalse(piece.Contains('\uFFFD'), $"{fixture}: '{text}' streamed a replacement character");
                if (piece.Length > 0) Assert.IsFalse(char.IsHighSurrogate(piece[^1]), "half a surrogate pair");
                streamed += piece;
            }
            streamed += stream.Flush();
            Assert.AreEqual(tokenizer.Decode(ids, skipSpecialTokens: true), streamed, fixture);
            Assert.AreEqual(text, streamed, fixture);
        }
    }

    [TestMethod]
    public void HoldsBackTheBytesOfAnIncompleteCharacter()
    {
        var qwen = TokenizerFixtures.Get("qwen2.5-7b-instruct");
        int[] ids = qwen.Encode("𠀀", addSpecialTokens: false); // a rare character: several byte tokens
        Assert.IsTrue(ids.Length > 1);
        var stream = qwen.CreateStreamingDecoder();
        for (int i = 0; i < ids.Length - 1; i++) Assert.AreEqual("", stream.Push(ids[i]));
        Assert.AreEqual("𠀀", stream.Push(ids[^1]));
    }

    [TestMethod]
    public void SkipsSpecialTokensAndFlushesInvalidBytesAsReplacementCharacters()
    {
        var qwen = TokenizerFixtures.Get("qwen2.5-7b-instruct");
        var stream = qwen.CreateStreamingDecoder();
        Assert.AreEqual("", stream.Push(151645)); // <|im_end|>
        int[] partial = qwen.Encode("𠀀", addSpecialTokens: false);
        Assert.AreEqual("", stream.Push(partial[0]));
        Assert.AreEqual("\uFFFD", stream.Flush());
    }
}
