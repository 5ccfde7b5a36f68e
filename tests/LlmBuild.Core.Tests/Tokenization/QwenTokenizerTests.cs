using LlmBuild.Core.Tokenization;

namespace LlmBuild.Core.Tests.Tokenization;

[TestClass]
public sealed class QwenTokenizerTests
{
    private static Tokenizer Qwen => TokenizerFixtures.Get("qwen2.5-7b-instruct");

    [TestMethod]
    public void EncodesEveryGoldenStringLikeHuggingFace()
    {
        var goldens = TokenizerFixtures.Goldens("tokens-qwen2.5.json");
        var failures = new List<string>();
        int count = 0;
        foreach (var c in goldens.GetProperty("cases").EnumerateArray())
        {
            string text = c.GetProperty("text").GetString()!;
            int[] expected = TokenizerFixtures.Ints(c.GetProperty("ids"));
            int[] expectedWithSpecial = TokenizerFixtures.Ints(c.GetProperty("ids_with_special"));
            int[] actual = Qwen.Encode(text, addSpecialTokens: false);
            if (!actual.SequenceEqual(expected)) failures.Add($"{text}: expected [{string.Join(",", expected)}] got [{string.Join(",", actual)}]");
            if (!Qwen.Encode(text).SequenceEqual(expectedWithSpecial)) failures.Add($"{text} (with special tokens)");
            string decoded = Qwen.Decode(expected, skipSpecialTokens: false);
            if (decoded != c.GetProperty("decoded").GetString()) failures.Add($"{text}: decoded as '{decoded}'");
            count++;
        }
        Assert.AreEqual(24, count);
        Assert.AreEqual(0, failures.Count, string.Join("\n", failures));
    }

    [TestMethod]
    public void EncodesTheGoldenChatRenderingsLikeHuggingFace()
    {
        var goldens = TokenizerFixtures.Goldens("tokens-qwen2.5.json");
        foreach (var c in goldens.GetProperty("chats").EnumerateArray())
        {
            string rendered = c.GetProperty("rendered").GetString()!;
            CollectionAssert.AreEqual(TokenizerFixtures.Ints(c.GetProperty("ids")), Qwen.Encode(rendered, addSpecialTokens: false), rendered);
        }
    }

    [TestMethod]
    public void SpecialTokenInfoMatchesTheConfigFolder()
    {
        CollectionAssert.AreEqual(new[] { 151643, 151645 }, Qwen.EosIds.Order().ToArray());
        Assert.AreEqual("<|im_end|>", Qwen.Special.Eos);
        Assert.IsNull(Qwen.Special.Bos);
        Assert.AreEqual(151665, Qwen.Count);
        Assert.AreEqual(151644, Qwen.TokenToId("<|im_start|>"));
        Assert.AreEqual("Ġthe", Qwen.IdToToken(279));
    }

    [TestMethod]
    public void SkipsSpecialTokensWhenDecodingOnRequest()
    {
        int[] ids = Qwen.Encode("<|im_start|>user\nHi<|im_end|>", addSpecialTokens: false);
        Assert.AreEqual("<|im_start|>user\nHi<|im_end|>", Qwen.Decode(ids, skipSpecialTokens: false));
        Assert.AreEqual("user\nHi", Qwen.Decode(ids, skipSpecialTokens: true));
    }
}
