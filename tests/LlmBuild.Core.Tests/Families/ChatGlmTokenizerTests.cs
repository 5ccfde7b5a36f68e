using System.Text;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Tests.Tokenization;
using LlmBuild.Core.Tokenization;

namespace LlmBuild.Core.Tests.Families;

/// <summary>
/// ChatGLM3 / GLM-4 (model_type chatglm) ship their own tokenizer: tokenizer.model read by the remote
/// tokenization_chatglm.py. ChatGLM3's is a SentencePiece model, read by LlmBuild's SentencePiece reader (proven on
/// Llama 2's real file, SentencePieceModelFileTests) with ChatGLM3's nine special tokens appended after the vocabulary
/// and [gMASK] sop before every sequence, as its SPTokenizer / get_prefix_tokens do. GLM-4's is a tiktoken rank file:
/// a coded error that says how to get a tokenizer.json.
/// </summary>
[TestClass]
public sealed class ChatGlmTokenizerTests
{
    [TestMethod]
    public void Glm4sTiktokenFileIsACodedErrorThatSaysHowToGetATokenizerJson()
    {
        string dir = MalformedTokenizerTests.Folder(("tokenizer.model", "IQ== 0\n"),
            ("tokenizer_config.json", """{"tokenizer_class": "ChatGLM4Tokenizer", "auto_map": {"AutoTokenizer": ["tokenization_chatglm.ChatGLM4Tokenizer", null]}}"""));
        var e = Assert.ThrowsExactly<LlmBuildException>(() => Tokenizer.Load(dir));
        Assert.AreEqual(ErrorCodes.ChatGlmTokenizerModel, e.Code);
        foreach (string part in new[] { Path.GetFullPath(dir), "ChatGLM4Tokenizer", "tiktoken", "tokenizer.json", "-hf" })
            StringAssert.Contains(e.Message, part);
    }

    /// <summary>A SentencePiece BPE model of a few pieces, written from the ModelProto layout.</summary>
    private static byte[] TinySentencePieceModel()
    {
        var pieces = new (string Text, float Score, int Type)[]
        {
            ("<unk>", 0, 2), ("<s>", 0, 3), ("</s>", 0, 3), ("▁", -1, 1), ("h", -2, 1), ("i", -3, 1), ("▁h", -4, 1), ("▁hi", -5, 1),
        };
        var model = new List<byte>();
        foreach (var (text, score, type) in pieces)
        {
            var piece = new List<byte> { 0x0A, (byte)Encoding.UTF8.GetByteCount(text) };
            piece.AddRange(Encoding.UTF8.GetBytes(text));
            piece.Add(0x15);
            piece.AddRange(BitConverter.GetBytes(score));
            piece.AddRange([0x18, (byte)type]);
            model.AddRange([0x0A, (byte)piece.Count]);
            model.AddRange(piece);
        }
        model.AddRange([0x12, 0x02, 0x18, 0x02]);                 // trainer spec: model_type BPE
        model.AddRange([0x1A, 0x0C, 0x0A, 0x08]);                 // normalizer spec: name "identity",
        model.AddRange(Encoding.ASCII.GetBytes("identity"));
        model.AddRange([0x20, 0x00]);                             // remove_extra_whitespaces false
        return model.ToArray();
    }

    [TestMethod]
    public void ChatGlm3sSentencePieceModelGetsItsSpecialTokensAndPrefix()
    {
        string dir = MalformedTokenizerTests.Folder(("tokenizer_config.json", """{"tokenizer_class": "ChatGLMTokenizer"}"""));
        File.WriteAllBytes(Path.Combine(dir, "tokenizer.model"), TinySentencePieceModel());
        Tokenizer tokenizer = Tokenizer.Load(dir);
        int gMask = 8 + 1, sop = 8 + 3, user = 8 + 6, assistant = 8 + 7;
        CollectionAssert.AreEqual(new[] { 7 }, tokenizer.Encode("hi", addSpecialTokens: false), "▁hi");
        CollectionAssert.AreEqual(new[] { gMask, sop, 7 }, tokenizer.Encode("hi"), "[gMASK] sop before the sequence");
        // Special tokens split the text; each piece between them gets the dummy prefix ▁, as a separate sp.encode would.
        CollectionAssert.AreEqual(new[] { gMask, sop, user, 7, assistant }, tokenizer.Encode("[gMASK]sop<|user|>hi<|assistant|>", addSpecialTokens: false));
        Assert.AreEqual("hi", tokenizer.Decode([gMask, sop, 7], skipSpecialTokens: true));
    }

    [TestMethod]
    public void ALoneTokenizerModelThatIsNoSentencePieceModelIsACodedError()
    {
        string dir = MalformedTokenizerTests.Folder(("tokenizer.model", "not read"), ("tokenizer_config.json", """{"tokenizer_class": "LlamaTokenizer"}"""));
        var e = Assert.ThrowsExactly<LlmBuildException>(() => Tokenizer.Load(dir));
        Assert.AreEqual(ErrorCodes.BadTokenizerFile, e.Code);
        StringAssert.Contains(e.Message, "tokenizer.model");
    }

    [TestMethod]
    public void AChatGlmFolderWithATokenizerJsonLoadsIt()
    {
        string dir = MalformedTokenizerTests.Folder(("tokenizer.model", "not read"), ("tokenizer.json", MalformedTokenizerTests.ValidTokenizerJson),
            ("tokenizer_config.json", """{"tokenizer_class": "ChatGLMTokenizer"}"""));
        CollectionAssert.AreEqual(new[] { 2, 3 }, Tokenizer.Load(dir).Encode("ab<eos>"));
    }
}
