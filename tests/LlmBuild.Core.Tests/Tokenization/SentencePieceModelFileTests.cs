using System.Text.Json;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Tokenization;

namespace LlmBuild.Core.Tests.Tokenization;

/// <summary>
/// tokenizer.model read without the sentencepiece library, proven on Llama 2's real file: the vocabulary and merges it
/// states equal those of the tokenizer.json transformers wrote for the same model, and a folder holding only
/// tokenizer.model encodes and decodes Hugging Face's 24 golden strings like that tokenizer.
/// </summary>
[TestClass]
public sealed class SentencePieceModelFileTests
{
    private static string Llama2 => TokenizerFixtures.Fixture("llama2-7b-chat");

    /// <summary>Llama 2's config folder without its tokenizer.json.</summary>
    private static readonly Lazy<string> OnlyTokenizerModel = new(() =>
    {
        string dir = Path.Combine(Path.GetTempPath(), "llmb-spm-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        foreach (string f in new[] { "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "config.json" })
            File.Copy(Path.Combine(Llama2, f), Path.Combine(dir, f));
        return dir;
    });

    [TestMethod]
    public void TheStatedVocabularyAndMergesEqualTransformersTokenizerJson()
    {
        string path = Path.Combine(Llama2, "tokenizer.model");
        var model = SentencePieceModelFile.Read(path);
        Assert.AreEqual(32000, model.Pieces.Count);
        Assert.AreEqual((2, true, true), (model.ModelType, model.ByteFallback, model.AddDummyPrefix));
        using var ours = JsonDocument.Parse(SentencePieceModelFile.ToTokenizerJson(model, [], path));
        using var theirs = JsonDocument.Parse(File.ReadAllText(Path.Combine(Llama2, "tokenizer.json")));
        var a = ours.RootElement.GetProperty("model");
        var b = theirs.RootElement.GetProperty("model");
        CollectionAssert.AreEqual(b.GetProperty("vocab").EnumerateObject().Select(p => (p.Name, p.Value.GetInt32())).ToArray(),
            a.GetProperty("vocab").EnumerateObject().Select(p => (p.Name, p.Value.GetInt32())).ToArray());
        string[] Merges(JsonElement m) => m.GetProperty("merges").EnumerateArray()
            .Select(x => x.ValueKind == JsonValueKind.String ? x.GetString()! : $"{x[0].GetString()} {x[1].GetString()}").ToArray();
        string[] expected = Merges(b), actual = Merges(a);
        Assert.AreEqual(expected.Length, actual.Length);
        int first = Enumerable.Range(0, expected.Length).FirstOrDefault(i => expected[i] != actual[i], -1);
        Assert.AreEqual(-1, first, first < 0 ? "" : $"merge {first}: expected '{expected[first]}', got '{actual[first]}'");
    }

    [TestMethod]
    public void AFolderWithOnlyTokenizerModelEncodesTheLlama2GoldensLikeHuggingFace()
    {
        Tokenizer tokenizer = Tokenizer.Load(OnlyTokenizerModel.Value);
        var failures = new List<string>();
        int count = 0;
        foreach (var c in TokenizerFixtures.Goldens("tokens-llama2.json").GetProperty("cases").EnumerateArray())
        {
            string text = c.GetProperty("text").GetString()!;
            int[] ids = TokenizerFixtures.Ints(c.GetProperty("ids")), withSpecial = TokenizerFixtures.Ints(c.GetProperty("ids_with_special"));
            if (!tokenizer.Encode(text, addSpecialTokens: false).SequenceEqual(ids)) failures.Add("encode: " + text);
            if (!tokenizer.Encode(text).SequenceEqual(withSpecial)) failures.Add("encode with BOS: " + text);
            if (tokenizer.Decode(withSpecial, skipSpecialTokens: true) != text) failures.Add("decode: " + text);
            count++;
        }
        Assert.AreEqual(24, count);
        Assert.AreEqual(0, failures.Count, string.Join("\n", failures));
    }

    [TestMethod]
    public void ADamagedOrUnigramModelIsACodedError()
    {
        string dir = Path.Combine(Path.GetTempPath(), "llmb-spm-bad-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        string path = Path.Combine(dir, "tokenizer.model");
        byte[] real = File.ReadAllBytes(Path.Combine(Llama2, "tokenizer.model"));
        File.WriteAllBytes(path, real[..1000]); // cut inside a piece
        Assert.AreEqual(ErrorCodes.BadTokenizerFile, Assert.ThrowsExactly<LlmBuildException>(() => Tokenizer.Load(dir)).Code);
        // One piece and a trainer spec saying model_type 1 (unigram).
        File.WriteAllBytes(path, [0x0A, 0x05, 0x0A, 0x01, (byte)'a', 0x18, 0x01, 0x12, 0x02, 0x18, 0x01]);
        var e = Assert.ThrowsExactly<LlmBuildException>(() => Tokenizer.Load(dir));
        Assert.AreEqual(ErrorCodes.UnsupportedTokenizerFeature, e.Code);
        StringAssert.Contains(e.Message, "unigram");
    }
}
