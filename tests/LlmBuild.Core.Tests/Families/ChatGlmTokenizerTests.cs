using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Tests.Tokenization;
using LlmBuild.Core.Tokenization;

namespace LlmBuild.Core.Tests.Families;

/// <summary>
/// ChatGLM3 / GLM-4 (model_type chatglm) ship their own tokenizer: tokenizer.model read by the remote
/// tokenization_chatglm.py (SentencePiece in ChatGLM3, tiktoken ranks in GLM-4), which transformers cannot save as a
/// tokenizer.json. LlmBuild reads tokenizer.json, so such a folder is a coded error that says how to get one.
/// </summary>
[TestClass]
public sealed class ChatGlmTokenizerTests
{
    [TestMethod]
    [DataRow("ChatGLMTokenizer")]
    [DataRow("ChatGLM4Tokenizer")]
    public void ChatGlmsOwnTokenizerIsACodedErrorThatSaysHowToGetATokenizerJson(string tokenizerClass)
    {
        string dir = MalformedTokenizerTests.Folder(("tokenizer.model", "not read"),
            ("tokenizer_config.json", $$$"""{"tokenizer_class": "{{{tokenizerClass}}}", "auto_map": {"AutoTokenizer": ["tokenization_chatglm.{{{tokenizerClass}}}", null]}}"""));
        var e = Assert.ThrowsExactly<LlmBuildException>(() => Tokenizer.Load(dir));
        Assert.AreEqual(ErrorCodes.ChatGlmTokenizerModel, e.Code);
        foreach (string part in new[] { Path.GetFullPath(dir), tokenizerClass, "tokenizer.json", "-hf", "SpmConverter", "[gMASK]", "<|assistant|>", "save_pretrained" })
            StringAssert.Contains(e.Message, part);
    }

    [TestMethod]
    public void AnyOtherLoneTokenizerModelKeepsTheGeneralError()
    {
        string dir = MalformedTokenizerTests.Folder(("tokenizer.model", "not read"), ("tokenizer_config.json", """{"tokenizer_class": "LlamaTokenizer"}"""));
        Assert.AreEqual(ErrorCodes.UnsupportedTokenizerFeature, Assert.ThrowsExactly<LlmBuildException>(() => Tokenizer.Load(dir)).Code);
    }

    [TestMethod]
    public void AChatGlmFolderWithATokenizerJsonLoadsIt()
    {
        string dir = MalformedTokenizerTests.Folder(("tokenizer.model", "not read"), ("tokenizer.json", MalformedTokenizerTests.ValidTokenizerJson),
            ("tokenizer_config.json", """{"tokenizer_class": "ChatGLMTokenizer"}"""));
        CollectionAssert.AreEqual(new[] { 2, 3 }, Tokenizer.Load(dir).Encode("ab<eos>"));
    }
}
