using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Tests.Codegen;
using LlmBuild.Core.Tests.Graph;
using LlmBuild.Core.Tokenization;

namespace LlmBuild.Core.Tests.Checkpoints;

/// <summary>
/// The tokenizer files written from GGUF metadata tokenize as Hugging Face's tokenizers do: the fixtures' prompt ids
/// (made by transformers) and, for the Qwen2 vocabulary, the example checkpoint's own tokenizer files on mixed text.
/// </summary>
[TestClass]
public sealed class GgufTokenizerTests
{
    private static string WriteConfig(string name)
    {
        string dir = Path.Combine(Path.GetTempPath(), "gguf-config-" + Guid.NewGuid().ToString("N"));
        GgufTokenizerFiles.Write(TestResolver.Fixture(Path.Combine("gguf", name + ".gguf")), dir);
        return dir;
    }

    [TestMethod]
    public void Qwen2TokenizerMatchesTheGoldenPromptAndTheCheckpointsOwnFiles()
    {
        string dir = WriteConfig("tiny-qwen2-fortunes-q8_0");
        var fromGguf = Tokenizer.Load(dir);
        var fromCheckpoint = Tokenizer.Load(ExampleBuild.ModelDir);
        CollectionAssert.AreEqual(GoldenFixture.Gguf("tiny-qwen2-fortunes-q8_0").PromptIds, fromGguf.Encode("Once upon a time"));
        foreach (string text in new[] { "Hello, world! 12345 ünïcödé\n\n  spaces\tand tabs", "<|im_start|>user\nHi<|im_end|>\n", "中文 текст 😀 it's 3.14" })
        {
            CollectionAssert.AreEqual(fromCheckpoint.Encode(text), fromGguf.Encode(text), text);
            Assert.AreEqual(text, fromGguf.Decode(fromGguf.Encode(text)), text);
        }
        CollectionAssert.AreEquivalent(fromCheckpoint.EosIds.ToArray(), fromGguf.EosIds.ToArray());
        var template = ChatTemplate.Load(dir);
        StringAssert.Contains(template.Render([new ChatMessage("user", "Hi")], addGenerationPrompt: true), "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    }

    [TestMethod]
    public void SentencePieceTokenizerMatchesTheGoldenPrompt()
    {
        string dir = WriteConfig("tiny-llama-q8_0");
        var tokenizer = Tokenizer.Load(dir);
        var golden = GoldenFixture.Gguf("tiny-llama-q8_0");
        CollectionAssert.AreEqual(golden.PromptIds, tokenizer.Encode("Once upon a time there was a little robot"));
        Assert.AreEqual("Once upon a time there was a little robot", tokenizer.Decode(golden.PromptIds, skipSpecialTokens: true));
        CollectionAssert.Contains(tokenizer.EosIds.ToArray(), 2);
    }
}
